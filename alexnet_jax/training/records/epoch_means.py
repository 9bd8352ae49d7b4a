"""The training error of each epoch: the mean over its steps of every training batch's loss,
top-1 and top-5 error (what the paper's Figure 1 plots against epochs).

The sums stay on the devices while the epoch runs (adding one step's metrics never waits for
the step), are fetched only at a checkpoint or at the end of the epoch, and travel in every
checkpoint, so that a run resumed in the middle of an epoch reports the same mean as an
uninterrupted one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

KEYS = ("loss", "top1_error", "top5_error")


class EpochMeans:
    """Running sums of one epoch's training metrics."""

    def __init__(self):
        self.epoch: int | None = None
        self.steps = 0
        self._sums: dict[str, jax.Array] | None = None

    def start(self, epoch: int, saved: dict[str, Any] | None = None) -> None:
        """Begin `epoch`; `saved` (from `to_dict`) continues a resumed epoch's sums."""
        if saved and saved.get("epoch") == epoch:
            self.epoch, self.steps = epoch, int(saved["steps"])
            self._sums = {key: jnp.float32(saved["sums"][key]) for key in KEYS}
        elif self.epoch != epoch:
            self.epoch, self.steps, self._sums = epoch, 0, None

    def add(self, metrics: dict[str, jax.Array]) -> None:
        """Add one step's metrics (device arrays; nothing is fetched)."""
        step_values = {key: metrics[key] for key in KEYS}
        self._sums = step_values if self._sums is None else jax.tree.map(
            jnp.add, self._sums, step_values)
        self.steps += 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state for a checkpoint (fetches the sums)."""
        sums = {key: 0.0 for key in KEYS} if self._sums is None else {
            key: float(value) for key, value in jax.device_get(self._sums).items()}
        return {"epoch": self.epoch, "steps": self.steps, "sums": sums}

    def means(self) -> dict[str, float]:
        """The epoch's mean loss, top-1 and top-5 training error so far, and its step count."""
        state = self.to_dict()
        steps = max(state["steps"], 1)
        return {**{key: value / steps for key, value in state["sums"].items()},
                "steps": state["steps"]}
