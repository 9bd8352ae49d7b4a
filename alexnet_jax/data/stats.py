"""Training-set statistics: the mean image and the RGB covariance's eigen-decomposition.

Paper section 2 subtracts the mean image; section 4.1 adds PCA lighting noise along the
eigenvectors of the RGB covariance. Both are computed from (a bounded, deterministic sample of)
the training split of the dataset in use, on the 0-255 scale, after the paper's resize and
central crop, and cached beside the prepared data as `alexnet_stats_<resize>_<sample>.npz`.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from alexnet_jax.data import preprocess
from alexnet_jax.data.sources import Source
from alexnet_jax.progress import progress_bar

# Published ImageNet values (PAPER.md section 3): a check on computed statistics, and the
# fallback `data.stats_source='imagenet'`.
CUDA_CONVNET2_EIGENVECTORS = np.array([[0.418, -0.713, -0.564],
                                       [-0.817, -0.024, -0.576],
                                       [0.397, 0.701, -0.592]])       # columns
CUDA_CONVNET2_STDS = np.array([19.72, 37.09, 121.78])                 # 0-255 scale
FB_EIGENVECTORS = np.array([[-0.5675, 0.7192, 0.4009],
                            [-0.5808, -0.0045, -0.8140],
                            [-0.5836, -0.6948, 0.4203]])
# fb.resnet.torch writes this matrix row by row and computes rgb_i = sum_j V[i][j] a_j l_j, so
# its eigenvectors are the columns (the first, the luminance direction, goes with 0.2175).
FB_EIGENVALUES = np.array([0.2175, 0.0188, 0.0045])                   # [0, 1] scale
IMAGENET_RGB_MEAN = np.array([123.68, 116.779, 103.939])              # 0-255 scale


@dataclasses.dataclass(frozen=True)
class DatasetStats:
    """Mean image and RGB covariance eigen-decomposition (0-255 scale, largest first)."""

    mean_image: np.ndarray      # (S, S, 3) float32
    eigenvalues: np.ndarray     # (3,) variances along the eigenvectors, descending
    eigenvectors: np.ndarray    # (3, 3) unit eigenvectors as columns
    sample_size: int            # images the statistics were computed from

    @property
    def channel_mean(self) -> np.ndarray:
        return self.mean_image.reshape(-1, 3).mean(axis=0)

    def lighting_scales(self, mode: str) -> np.ndarray:
        """Per-component noise scale: standard deviations (cuda-convnet2) or the eigenvalues of
        the [0, 1]-scaled covariance expressed on the 0-255 scale (fb.resnet.torch reading)."""
        if mode == "cuda_convnet2":
            return np.sqrt(self.eigenvalues)
        if mode == "eigenvalue":
            return self.eigenvalues / 255.0
        raise ValueError(f"unknown lighting mode {mode!r}")


def published_imagenet_stats(resize_size: int, mode: str) -> DatasetStats:
    """The published ImageNet values, as if computed: each mode's own published eigenbasis."""
    if mode == "eigenvalue":
        eigenvalues, eigenvectors = FB_EIGENVALUES * 255.0 ** 2, FB_EIGENVECTORS
    else:
        order = np.argsort(-CUDA_CONVNET2_STDS)
        eigenvalues = CUDA_CONVNET2_STDS[order] ** 2
        eigenvectors = CUDA_CONVNET2_EIGENVECTORS[:, order]
    mean = np.broadcast_to(IMAGENET_RGB_MEAN, (resize_size, resize_size, 3))
    return DatasetStats(mean.astype(np.float32), eigenvalues, eigenvectors, 0)


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
    ds = source.builder.as_dataset(split=f"{source.train_split}[:{count}]", shuffle_files=False,
                                   decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: preprocess.paper_square(preprocess.decode(ex["image"]), resize_size),
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


def eigenvector_agreement(eigenvectors: np.ndarray, reference_columns: np.ndarray) -> np.ndarray:
    """|cosine| between corresponding eigenvectors (sign is arbitrary), largest first."""
    unit = reference_columns / np.linalg.norm(reference_columns, axis=0)
    return np.abs(np.sum(eigenvectors * unit, axis=0))


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
