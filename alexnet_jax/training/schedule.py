"""Learning-rate schedules, driven by the host once per evaluation; their state is checkpointed.

`plateau` (the paper, section 5): "divide the learning rate by 10 when the validation error rate
stopped improving with the current learning rate ... reduced three times prior to termination".
After `patience` evaluations without an improvement of the best top-1 error by more than
`min_improvement`, the rate is multiplied by `factor`; after `max_reductions` reductions, the
next plateau ends the run (`after_last=stop`) or the run goes on to `num_epochs` (`continue`).

`step`: the rate is multiplied by `factor` at each epoch of `step_epochs` (a reproducible
alternative that does not depend on validation results). `constant`: never changes.

Any of them may start with `warmup_epochs` of linear warm-up (Goyal et al. 2017): step by step
from `warmup_start` (the unscaled rate, when the rate is scaled for a large batch) to the rate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

SCHEDULES = ("plateau", "step", "constant")


@dataclasses.dataclass
class ScheduleState:
    """Everything the schedule remembers (JSON-serialisable, saved in every checkpoint)."""

    learning_rate: float
    best_error: float = float("inf")
    evals_since_best: int = 0
    reductions: int = 0
    finished: bool = False  # plateau after the last reduction, with after_last=stop


class Schedule:
    """The learning rate of each epoch, updated after each evaluation."""

    def __init__(self, config: ml_collections.ConfigDict, initial_learning_rate: float,
                 warmup_start: float | None = None):
        self.name = config.name
        self.factor = config.factor
        self.patience = config.patience
        self.max_reductions = config.max_reductions
        self.min_improvement = config.min_improvement
        self.after_last = config.after_last
        self.step_epochs = tuple(config.step_epochs)
        self.state = ScheduleState(initial_learning_rate)
        self.initial_learning_rate = initial_learning_rate
        self.warmup_epochs = float(config.get("warmup_epochs", 0.0))
        self.warmup_start = initial_learning_rate if warmup_start is None else warmup_start

    @property
    def learning_rate(self) -> float:
        return self.state.learning_rate

    def rate_at(self, step: int, steps_per_epoch: int) -> float:
        """The rate of step `step` (0-based): the schedule's, ramped up during the warm-up."""
        warmup_steps = self.warmup_epochs * steps_per_epoch
        if step >= warmup_steps:
            return self.learning_rate
        fraction = step / warmup_steps
        return self.warmup_start + (self.learning_rate - self.warmup_start) * fraction

    def start_epoch(self, epoch: int) -> None:
        """For `step`: the rate of epoch `epoch` (0-based)."""
        if self.name == "step":
            drops = sum(epoch >= boundary for boundary in self.step_epochs)
            self.state.learning_rate = self.initial_learning_rate * self.factor ** drops
            self.state.reductions = drops

    def record_evaluation(self, top1_error: float) -> str | None:
        """Feed one validation error; returns what happened ("reduced", "finished") or None."""
        s = self.state
        improved = top1_error < s.best_error - self.min_improvement
        if top1_error < s.best_error:
            s.best_error = top1_error
        if improved:
            s.evals_since_best = 0
            return None
        s.evals_since_best += 1
        if self.name != "plateau" or s.evals_since_best < self.patience:
            return None
        s.evals_since_best = 0
        if s.reductions < self.max_reductions:
            s.reductions += 1
            s.learning_rate *= self.factor
            return "reduced"
        if self.after_last == "stop":
            s.finished = True
            return "finished"
        return None

    def to_dict(self) -> dict[str, Any]:
        state = dataclasses.asdict(self.state)
        state["best_error"] = None if state["best_error"] == float("inf") else state["best_error"]
        return state

    def load_dict(self, saved: dict[str, Any]) -> None:
        saved = dict(saved)
        if saved.get("best_error") is None:
            saved["best_error"] = float("inf")
        self.state = ScheduleState(**saved)
