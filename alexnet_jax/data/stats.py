"""Training-set statistics: the mean image and the RGB covariance's eigen-decomposition.

Paper section 2 subtracts the mean image; section 4.1 adds PCA lighting noise along the
eigenvectors of the RGB covariance. Both are computed from (a bounded, deterministic sample of)
the training split of the dataset in use, on the 0-255 scale, after the paper's resize and
central crop, and cached beside the prepared data as `alexnet_stats_<resize>_<sample>.npz`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from alexnet_jax.common.progress import progress_bar
from alexnet_jax.data import preprocess
from alexnet_jax.data.published_stats import (  # noqa: F401 - re-exported
    CUDA_CONVNET2_EIGENVECTORS,
    CUDA_CONVNET2_STDS,
    FB_EIGENVALUES,
    FB_EIGENVECTORS,
    IMAGENET_RGB_MEAN,
    DatasetStats,
    eigenvector_agreement,
    published_imagenet_stats,
)
from alexnet_jax.data.sources import Source


def stats_path(source: Source, resize_size: int, sample_size: int) -> Path:
    return source.prepared_dir / f"alexnet_stats_{resize_size}_{sample_size}.npz"


def compute_stats(source: Source, resize_size: int, sample_size: int,
                  progress: bool = True) -> DatasetStats:
    """Statistics of the first `sample_size` training images (all if <= 0).

    tfds shuffles examples when it prepares a dataset, so the first N are a random sample, and
    always the same one.
    """
    total = source.num_examples(source.train_split)
    count = total if sample_size <= 0 else min(sample_size, total)
    raw = source.prepared_storage == "raw"
    ds = source.builder.as_dataset(split=f"{source.train_split}[:{count}]", shuffle_files=False,
                                   decoders=None if raw else {"image": tfds.decode.SkipDecoding()})
    square = (lambda image: tf.cast(image, tf.float32)) if raw else (
        lambda image: preprocess.paper_square(preprocess.decode(image), resize_size))
    ds = ds.map(lambda ex: square(ex["image"]),
                num_parallel_calls=tf.data.AUTOTUNE).batch(64).prefetch(2)
    image_sum = np.zeros((resize_size, resize_size, 3), np.float64)
    outer_sum = np.zeros((3, 3), np.float64)
    seen = 0
    with progress_bar(count, f"statistics of {source.name}", "img", enabled=progress) as bar:
        for batch in tfds.as_numpy(ds):
            batch = batch.astype(np.float64)
            image_sum += batch.sum(axis=0)
            pixels = batch.reshape(-1, 3)
            outer_sum += pixels.T @ pixels
            seen += len(batch)
            bar.update(len(batch))
    mean_image = image_sum / seen
    mean_rgb = mean_image.reshape(-1, 3).mean(axis=0)
    covariance = outer_sum / (seen * resize_size * resize_size) - np.outer(mean_rgb, mean_rgb)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(-eigenvalues)
    return DatasetStats(mean_image.astype(np.float32), eigenvalues[order],
                        eigenvectors[:, order], seen)


def save_stats(stats: DatasetStats, path: Path) -> None:
    """Write atomically: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp.npz", delete=False) as f:
        np.savez(f, mean_image=stats.mean_image, eigenvalues=stats.eigenvalues,
                 eigenvectors=stats.eigenvectors, sample_size=stats.sample_size)
    os.replace(f.name, path)


def load_stats(path: Path) -> DatasetStats:
    with np.load(path) as data:
        return DatasetStats(data["mean_image"], data["eigenvalues"], data["eigenvectors"],
                            int(data["sample_size"]))


def dataset_stats(source: Source, resize_size: int, sample_size: int,
                  progress: bool = True) -> DatasetStats:
    """Cached statistics, computed (with a progress bar) and cached on first use."""
    path = stats_path(source, resize_size, sample_size)
    if path.exists():
        return load_stats(path)
    stats = compute_stats(source, resize_size, sample_size, progress)
    try:
        save_stats(stats, path)
    except OSError as error:
        logging.warning("could not cache dataset statistics at %s (%s); they will be computed "
                        "again next time", path, error)
    return stats


def describe(stats: DatasetStats, path: Path | None = None) -> str:
    """A human-readable report, with the agreement with the published ImageNet eigenvectors."""
    reference = published_imagenet_stats(1, "cuda_convnet2")
    agreement = eigenvector_agreement(stats.eigenvectors, reference.eigenvectors)
    lines = [f"images in the sample: {stats.sample_size}" + (f" (cached at {path})" if path else ""),
             f"mean image: {stats.mean_image.shape}, channel means (RGB, 0-255): "
             f"{np.array2string(stats.channel_mean, precision=2)}",
             f"RGB covariance eigenvalues (0-255 scale): "
             f"{np.array2string(stats.eigenvalues, precision=1)}",
             f"  component standard deviations (cuda_convnet2 lighting scales): "
             f"{np.array2string(np.sqrt(stats.eigenvalues), precision=2)} "
             f"(ImageNet, published: {np.array2string(np.sort(CUDA_CONVNET2_STDS)[::-1], precision=2)})",
             "eigenvectors (columns, largest first):"]
    lines += ["  " + np.array2string(row, precision=4) for row in stats.eigenvectors]
    lines.append(f"|cos| with the published ImageNet eigenvectors, largest first: "
                 f"{np.array2string(agreement, precision=4)}")
    return "\n".join(lines)
