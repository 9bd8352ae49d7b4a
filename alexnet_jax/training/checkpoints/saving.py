"""Checkpointing the state of a run, only when its parameters are finite, with its progress
record; and how a run that diverged stops."""

from __future__ import annotations

import math

import jax

from alexnet_jax.common.errors import UserError
from alexnet_jax.training import resume_policy, steps
from alexnet_jax.training.records.epoch_means import EpochMeans
from alexnet_jax.training.records.run_log import RunLog


class Saver:
    """Saves the run's state; `epoch_means` (the epoch's running sums) travel with it."""

    def __init__(self, run, log: RunLog, steps_per_epoch: int):
        self.run, self.log, self.steps_per_epoch = run, log, steps_per_epoch
        self.epoch_means = EpochMeans()
        self.all_finite = jax.jit(steps.all_finite)

    def save(self, step: int, top1_error: float | None = None,
              epoch_end_pending: bool = False, replace: bool = False) -> None:
        """Checkpoint the state after `step`, if its parameters are all finite (a loss that
        was finite before the update says nothing about the parameters after it)."""
        run = self.run
        self.check_finite(step)
        run.progress.update(step=step, epoch=step / self.steps_per_epoch,
                            schedule=run.schedule.to_dict(),
                            epoch_train=self.epoch_means.to_dict(),
                            # the config in force (optimizer values read from its state):
                            # what the next resume compares with (resume_policy)
                            config=resume_policy.config_in_force(run.config, run.opt_state),
                            data_shards=run.data_shards, data=run.data_identity,
                            epoch_end_pending=epoch_end_pending)
        run.checkpointer.save(step, run.params, run.opt_state, run.progress, top1_error, replace)

    def check_finite(self, step: int) -> None:
        """Stop the run as diverged (UserError) when its parameters are not all finite."""
        if not bool(self.all_finite(self.run.params)):
            self.diverged(step, f"the parameters became non-finite at step {step}", math.nan)

    def diverged(self, step: int, what: str, loss: float) -> None:
        # recorded so that a study's sweep can score this learning rate as failed
        self.log.event(step, "diverged", loss=str(loss))
        last_good = self.run.checkpointer.latest_step()
        kept = (f"kept its last good checkpoint (step {last_good})" if last_good is not None
                else "has no checkpoint to go back to (none was written before)")
        raise UserError(
            f"{what}; the run stopped and {kept}. Lower optimizer.learning_rate (the same "
            "command with --config.optimizer.learning_rate=... resumes from that checkpoint "
            "with the new rate), or check the data and the initialisation.")
