"""The mean image and RGB covariance of a stream of squares, and their cache files, in NumPy
alone: used by stats.py (tensorflow-datasets sources) and by prepared folders read without
TensorFlow (prepared_folder.py)."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from alexnet_jax.common.errors import UserError
from alexnet_jax.data.published_stats import DatasetStats


class StatsSums:
    """Running sums of S x S x 3 squares (0-255 scale) from which the statistics follow."""

    def __init__(self, size: int):
        self.size = size
        self.image_sum = np.zeros((size, size, 3), np.float64)
        self.outer_sum = np.zeros((3, 3), np.float64)
        self.seen = 0

    def add(self, squares_NxSxSx3: np.ndarray) -> None:
        batch = np.asarray(squares_NxSxSx3, np.float64)
        self.image_sum += batch.sum(axis=0)
        pixels = batch.reshape(-1, 3)
        self.outer_sum += pixels.T @ pixels
        self.seen += len(batch)

    def stats(self) -> DatasetStats:
        """Mean image; eigen-decomposition of the RGB covariance, largest component first."""
        if not self.seen:
            raise ValueError("no images to compute the dataset statistics from")
        mean_image = self.image_sum / self.seen
        mean_rgb = mean_image.reshape(-1, 3).mean(axis=0)
        covariance = (self.outer_sum / (self.seen * self.size * self.size)
                      - np.outer(mean_rgb, mean_rgb))
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(-eigenvalues)
        return DatasetStats(mean_image.astype(np.float32), eigenvalues[order],
                            eigenvectors[:, order], self.seen)


def stats_file_name(resize_size: int, sample_size: int) -> str:
    """The cache file's name beside the prepared data."""
    return f"alexnet_stats_{resize_size}_{sample_size}.npz"


def save_stats(stats: DatasetStats, path: Path) -> None:
    """Write atomically (a reader never sees a half-written file), readable by everyone who can
    read the data folder, and leave no temporary file behind when the write fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # named as the cache is (alexnet_stats_*.npz), a file that belongs to a prepared folder
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f"{path.stem}.", suffix=".tmp.npz",
                                     delete=False) as f:
        try:
            np.savez(f, mean_image=stats.mean_image, eigenvalues=stats.eigenvalues,
                     eigenvectors=stats.eigenvectors, sample_size=stats.sample_size)
        except BaseException:
            os.unlink(f.name)
            raise
    try:
        # a temporary file is private (0600); the cache of a shared data folder must not be
        os.chmod(f.name, 0o666 & ~_umask())
        os.replace(f.name, path)
    except BaseException:
        os.unlink(f.name)
        raise


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would change it for every
    thread for a moment, checkpoint writers included); 0o022 where /proc does not say."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def load_stats(path: Path) -> DatasetStats:
    """Statistics written by save_stats; UserError naming the file if it cannot be read."""
    try:
        with np.load(path) as data:
            return DatasetStats(data["mean_image"], data["eigenvalues"], data["eigenvectors"],
                                int(data["sample_size"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        raise UserError(f"the cached dataset statistics {path} cannot be read ({error!r}); "
                        "delete the file and the next run computes them again.") from error
