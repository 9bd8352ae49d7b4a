"""Training-set statistics: the mean image and the RGB covariance's eigen-decomposition.

Paper section 2 subtracts the mean image; section 4.1 adds PCA lighting noise along the
eigenvectors of the RGB covariance. Both are computed from (a bounded, deterministic sample of)
the training split of the dataset in use, on the 0-255 scale, after the paper's resize and
central crop, and cached beside the prepared data as `alexnet_stats_<resize>_<sample>.npz`.
"""

from __future__ import annotations

from pathlib import Path

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
    describe_stats,
    published_imagenet_stats,
)
from alexnet_jax.data.sources import Source
from alexnet_jax.data.stats_files import (  # noqa: F401 - save_stats re-exported
    StatsSums,
    load_stats,
    save_stats,
    stats_file_name,
)


def stats_path(source: Source, resize_size: int, sample_size: int) -> Path:
    return source.prepared_dir / stats_file_name(resize_size, sample_size)


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
    sums = StatsSums(resize_size)
    with progress_bar(count, f"statistics of {source.name}", "img", enabled=progress) as bar:
        for batch in tfds.as_numpy(ds):
            sums.add(batch)
            bar.update(len(batch))
    return sums.stats()


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
