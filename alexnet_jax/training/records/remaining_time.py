"""The time a run has left, its evaluations included: the remaining steps at the pace measured
between evaluations (from the first step's end: run_log.RunLog leaves the compilation out),
each remaining epoch's evaluation and the final ones at the seconds per
evaluated view measured so far (before the first evaluation: a third of a training image's time,
the forward pass of a forward and backward one). The progress bar shows it; tqdm's own estimate
counts steps only, and a run's evaluations (the final 10 views: ten times the centre crop's
images) can be minutes."""

from __future__ import annotations

import dataclasses
import math


def format_seconds(seconds: float) -> str:
    """h:mm:ss (or m:ss)."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


@dataclasses.dataclass
class RemainingTime:
    """What is left of a run, and the paces measured so far."""

    total_steps: int
    steps_per_epoch: int
    batch_size: int
    eval_images: int              # images of the evaluation split
    epoch_views: int              # views of each epoch's evaluation
    final_views: tuple[int, ...]  # views of the final evaluations
    seconds_per_step: float | None = None
    seconds_per_view: float | None = None  # one evaluated image, one view

    def steps_measured(self, steps: int, seconds: float) -> None:
        """Training steps timed between evaluations (a window of the log)."""
        if steps > 0 and seconds > 0:
            self.seconds_per_step = seconds / steps

    def evaluation_measured(self, views: int, seconds: float) -> None:
        if seconds > 0 and self.eval_images:
            self.seconds_per_view = seconds / (self.eval_images * views)

    def seconds_left(self, step: int) -> float | None:
        """The estimate at `step` (None before any step has been timed)."""
        if self.seconds_per_step is None:
            return None
        per_view = self.seconds_per_view
        if per_view is None:  # a forward pass of a training image's forward and backward
            per_view = self.seconds_per_step / self.batch_size / 3
        epoch_ends = self.total_steps // self.steps_per_epoch - step // self.steps_per_epoch
        # the final evaluation reuses the last epoch's when their views agree
        final = sum(v for v in self.final_views if not (
            v == self.epoch_views and self.total_steps % self.steps_per_epoch == 0))
        views = max(epoch_ends, 0) * self.epoch_views + final
        return ((self.total_steps - step) * self.seconds_per_step
                + views * self.eval_images * per_view)

    def text(self, step: int) -> str:
        left = self.seconds_left(step)
        return "?" if left is None or not math.isfinite(left) else format_seconds(left)
