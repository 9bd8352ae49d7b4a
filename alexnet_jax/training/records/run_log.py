"""What a training run records as it goes: training lines (loss, rate, images/s, data wait),
each epoch's mean training error, evaluation lines, and the pictures (conv1's filters, the
learning curves). metrics.jsonl and TensorBoard, through the run's MetricsWriter."""

from __future__ import annotations

import time
from typing import Any

import jax
import numpy as np
from absl import logging

from alexnet_jax.common import host_memory
from alexnet_jax.training.processes import multihost
from alexnet_jax.training.records import plots


def views_text(views: int) -> str:
    """The evaluation's views as the documentation names them: "centre crop" or "10 views"."""
    return "centre crop" if views == 1 else f"{views} views"


def log_evaluation(run, step: int, epoch: float, result: dict[str, Any],
                   split: str = "val") -> dict[str, Any]:
    """One evaluation line in metrics.jsonl (or eval_results.jsonl) and TensorBoard; `split`:
    "val", or "train" for the training images evaluated like the validation ones."""
    record = {"step": step, "epoch": epoch, "split": split, **result}
    run.writer.write_record(record)
    run.writer.write_scalars(step, {k: result[k] for k in ("top1_error", "top5_error", "loss")},
                             f"{split}_{result['crops']}crop/")
    run.writer.flush()
    logging.info("step %d %s (%s): top-1 error %.4f, top-5 error %.4f", step,
                 "validation" if split == "val" else "training images, evaluated",
                 views_text(result["crops"]), result["top1_error"], result["top5_error"])
    return record


class RunLog:
    """Training lines and pictures of one run; `bar` is its progress bar (set by the loop)."""

    def __init__(self, run, steps_per_epoch: int, remaining=None):
        """`remaining`: the run's remaining_time.RemainingTime, shown in the progress bar."""
        self.run = run
        self.remaining = remaining
        self.steps_per_epoch = steps_per_epoch
        self.batch_size = run.config.train.batch_size
        self.bar = None
        self.window: dict[str, float] = {}  # since the last line: start step, time, data wait
        self.reset_window(run.step)
        # (step, time) when this process's first step was done: the estimate of the time left
        # is timed from there, not from the start, which holds the compilation of the step and
        # the input pipeline's first batches (minutes on a CPU: 3x the true time left)
        self.first_step_done: tuple[int, float] | None = None

    def reset_window(self, step: int) -> None:
        self.window = {"step": step, "time": time.perf_counter(), "data_wait": 0.0}

    def add_data_wait(self, seconds: float) -> None:
        self.window["data_wait"] += seconds

    def step_fetched(self, step: int) -> None:
        """A step's metrics reached the host, so the step is done."""
        if self.first_step_done is None:
            self.first_step_done = (step, time.perf_counter())

    def training(self, step: int, metrics: dict[str, float]) -> None:
        """One training line: the step's metrics, the rate, images/s and data wait since the
        last line."""
        run = self.run
        now = time.perf_counter()
        elapsed = max(now - self.window["time"], 1e-9)
        # the rate the step's update used, as its state held it (float32), written as the
        # shortest decimal that is that float32 (0.01, not 0.009999999776482582)
        rate = float(str(np.float32(metrics["learning_rate"])))
        scalars = {**metrics, "learning_rate": rate,
                   "images_per_sec": (step - self.window["step"]) * self.batch_size / elapsed,
                   "data_wait_fraction": self.window["data_wait"] / elapsed,
                   # what the host allocator keeps (common/host_memory.py), seen as it grows
                   "host_peak_resident_gb": host_memory.peak_resident_gb()}
        epoch = step / self.steps_per_epoch
        run.writer.write_record({"step": step, "epoch": epoch, "split": "train", **scalars})
        run.writer.write_scalars(step, scalars, "train/")
        if self.remaining is not None:
            timed_from = (self.window["step"], self.window["time"])
            if self.first_step_done and self.first_step_done[0] > timed_from[0]:
                timed_from = self.first_step_done  # the window holds the compilation
            self.remaining.steps_measured(step - timed_from[0], now - timed_from[1])
        if self.bar is not None:
            left = {} if self.remaining is None else {
                "left": self.remaining.text(step) + " with evaluations"}
            self.bar.set_postfix(epoch=f"{epoch:.2f}", loss=f"{metrics['loss']:.4f}",
                                 lr=f"{rate:g}",
                                 img_s=f"{scalars['images_per_sec']:.1f}", **left)
        self.reset_window(step)

    def epoch_training_error(self, step: int, means: dict[str, float]) -> None:
        """The epoch's mean training loss and errors (the paper's Figure 1 plots them)."""
        record = {"step": step, "epoch": step / self.steps_per_epoch, "split": "train_epoch",
                  **means}
        self.run.writer.write_record(record)
        self.run.writer.write_scalars(
            step, {k: means[k] for k in ("loss", "top1_error", "top5_error")}, "train_epoch/")

    def event(self, step: int, event: str, **fields) -> None:
        self.run.writer.write_record({"step": step, "event": event, **fields})

    def pictures(self) -> None:
        """conv1's filters (gathered by every process: each may hold one column) and the
        learning curves, written by process 0."""
        run = self.run
        kernel = multihost.gather(run.params["conv1"]["kernel"])
        if jax.process_index() != 0:
            return
        if kernel.ndim == 4:  # a network without columns
            kernel = kernel[None]
        grid = plots.filter_grid(kernel)
        run.writer.write_images(run.step, "conv1_filters", grid[None])
        plots.save_filter_grid(kernel, run.workdir / plots.FILTERS_FILE)
        plots.plot_learning_curves(run.workdir)
        run.writer.flush()
