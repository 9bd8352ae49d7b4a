"""The mean image and RGB covariance of a stream of squares, and their cache files, in NumPy
alone: used by stats.py (tensorflow-datasets sources) and by prepared folders read without
TensorFlow (prepared_folder.py)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

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
    """Write atomically: a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".tmp.npz", delete=False) as f:
        np.savez(f, mean_image=stats.mean_image, eigenvalues=stats.eigenvalues,
                 eigenvectors=stats.eigenvectors, sample_size=stats.sample_size)
    os.replace(f.name, path)


def load_stats(path: Path) -> DatasetStats:
    """Statistics written by save_stats."""
    with np.load(path) as data:
        return DatasetStats(data["mean_image"], data["eigenvalues"], data["eigenvectors"],
                            int(data["sample_size"]))
