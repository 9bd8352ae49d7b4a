"""Pictures of a run: learning curves (from metrics.jsonl) and the first layer's kernels
(paper Figure 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alexnet_jax.common.run_files import read_records, surviving_records

CURVES_FILE = "learning_curves.png"
FILTERS_FILE = "conv1_filters.png"


def filter_grid(kernel_CxHxWx3xK: np.ndarray, border: int = 1) -> np.ndarray:
    """All conv1 kernels as one RGB image in [0, 1], one row of kernels per column (network
    column), each kernel contrast-stretched on its own as in the paper's Figure 3."""
    kernels = np.asarray(kernel_CxHxWx3xK, np.float32)
    columns, height, width, _, per_column = kernels.shape
    per_row = int(np.ceil(np.sqrt(per_column * 2)))
    rows_per_column = int(np.ceil(per_column / per_row))
    cell_h, cell_w = height + border, width + border
    grid = np.ones((columns * rows_per_column * cell_h + border, per_row * cell_w + border, 3),
                   np.float32)
    for c in range(columns):
        for k in range(per_column):
            kernel = kernels[c, :, :, :, k]
            low, high = kernel.min(), kernel.max()
            kernel = (kernel - low) / (high - low) if high > low else np.zeros_like(kernel)
            row, col = c * rows_per_column + k // per_row, k % per_row
            top, left = border + row * cell_h, border + col * cell_w
            grid[top:top + height, left:left + width] = kernel
    return grid


def save_filter_grid(kernel_CxHxWx3xK: np.ndarray, path: Path, scale: int = 4) -> None:
    from PIL import Image  # noqa: PLC0415

    grid = filter_grid(kernel_CxHxWx3xK)
    image = Image.fromarray((grid * 255).round().astype(np.uint8))
    image.resize((image.width * scale, image.height * scale), Image.NEAREST).save(path)


def plot_learning_curves(workdir: Path, path: Path | None = None) -> Path:
    """Training loss, learning rate and validation errors against epochs, as a PNG."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    workdir = Path(workdir)
    records = surviving_records(read_records(workdir))
    train = [r for r in records if r.get("split") == "train"]
    val = [r for r in records if r.get("split") == "val" and r.get("crops") == 1]
    val10 = [r for r in records if r.get("split") == "val" and r.get("crops") == 10]
    figure, (loss_ax, error_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    if train:
        loss_ax.plot([r["epoch"] for r in train], [float(r["loss"]) for r in train], lw=0.8,
                     label="training loss (batch)")
        if val:
            loss_ax.plot([r["epoch"] for r in val], [r["loss"] for r in val], "o-", ms=3,
                         label="validation loss")
        loss_ax.set_yscale("log")
        lr_ax = loss_ax.twinx()
        lr_ax.plot([r["epoch"] for r in train], [r["learning_rate"] for r in train], "k:",
                   lw=1, label="learning rate")
        lr_ax.set_yscale("log")
        lr_ax.set_ylabel("learning rate")
        lr_ax.legend(loc="upper right")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend(loc="lower left")
    for rows, style, name in ((val, "o-", "centre crop"), (val10, "s--", "10 views")):
        if rows:
            epochs = [r["epoch"] for r in rows]
            error_ax.plot(epochs, [r["top1_error"] for r in rows], style, ms=3,
                          label=f"top-1, {name}")
            error_ax.plot(epochs, [r["top5_error"] for r in rows], style, ms=3, alpha=0.6,
                          label=f"top-5, {name}")
    if train:
        error_ax.plot([r["epoch"] for r in train], [r["top1_error"] for r in train], lw=0.5,
                      alpha=0.5, label="top-1, training batch")
    error_ax.set_xlabel("epoch")
    error_ax.set_ylabel("error")
    error_ax.set_ylim(0, 1)
    error_ax.grid(alpha=0.3)
    error_ax.legend()
    figure.suptitle(workdir.name)
    figure.tight_layout()
    path = path or workdir / CURVES_FILE
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
