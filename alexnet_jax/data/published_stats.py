"""The statistics a run's preprocessing needs (mean image, RGB covariance eigen-decomposition)
as a plain NumPy record, and the published ImageNet values (no TensorFlow here)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

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


def eigenvector_agreement(eigenvectors: np.ndarray, reference_columns: np.ndarray) -> np.ndarray:
    """|cosine| between corresponding eigenvectors (sign is arbitrary), largest first."""
    unit = reference_columns / np.linalg.norm(reference_columns, axis=0)
    return np.abs(np.sum(eigenvectors * unit, axis=0))


def describe_stats(stats: DatasetStats, path: Path | None = None) -> str:
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
