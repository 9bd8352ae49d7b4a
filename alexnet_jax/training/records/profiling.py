"""A jax.profiler trace of chosen training steps (`train.profile_steps=(first, last)`), written
into the workdir where TensorBoard's profile tab finds it (<workdir>/plugins/profile/<time>/)."""

from __future__ import annotations

from pathlib import Path

import jax
from absl import logging


class StepProfiler:
    """Starts a trace before step `first` runs and stops it once step `last` has finished
    (steps numbered as in metrics.jsonl: the first step of a run is step 1)."""

    def __init__(self, steps: tuple[int, ...], directory: Path):
        self.first, self.last = (int(steps[0]), int(steps[1])) if steps else (0, -1)
        self.directory = Path(directory)
        self.active = False

    def before(self, step: int) -> None:
        """Called before step `step` is dispatched."""
        if step == self.first and not self.active:
            jax.profiler.start_trace(str(self.directory))
            self.active = True

    def after(self, step: int, state) -> None:
        """Called after step `step` was dispatched; `state` is what it computed."""
        if self.active and step >= self.last:
            jax.block_until_ready(state)  # the trace holds the steps' device time
            self.stop()

    def stop(self) -> None:
        if self.active:
            jax.profiler.stop_trace()
            self.active = False
            logging.info("profile of steps %d-%d written to %s (tensorboard --logdir %s, "
                         "tab PROFILE)", self.first, self.last,
                         self.directory / "plugins" / "profile", self.directory)
