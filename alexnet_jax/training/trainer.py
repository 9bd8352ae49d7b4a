"""The loop over the epochs of one run: train an epoch, then its end (training error,
evaluation, schedule, best checkpoint), until the last step, the schedule's end, the
training-error target or a stop; then the final checkpoint and evaluation."""

from __future__ import annotations

import json
from typing import Any

from absl import logging

from alexnet_jax.common.progress import OWN_ESTIMATE, progress_bar
from alexnet_jax.common.run_files import COMPLETION_FILE, read_completion, write_atomically
from alexnet_jax.data import feeding
from alexnet_jax.training.checkpoints.saving import Saver
from alexnet_jax.training.epoch_end import EpochEnd
from alexnet_jax.training.evaluation import Evaluations
from alexnet_jax.training.processes.preemption import StopRequest
from alexnet_jax.training.records.remaining_time import RemainingTime
from alexnet_jax.training.records.run_log import RunLog
from alexnet_jax.training.stepping import StepRunner


def run_ends(run, total_steps: int) -> list[str]:
    """What ends a run at its step (resume_policy.RUN_ENDS): its last step, its plateau
    schedule, its training-error target; none while it has steps to train."""
    return [end for end, holds in (("steps", run.step >= total_steps),
                                   ("schedule", run.schedule.state.finished),
                                   ("target", bool(run.progress.get("target_reached"))))
            if holds]


class Trainer:
    """Trains one run (training.run.Run) to its end, or until a stop (then saves)."""

    def __init__(self, run, stop: StopRequest):
        self.run, self.stop = run, stop
        train = run.config.train
        self.steps_per_epoch = feeding.train_steps_per_epoch(run.source, train.batch_size)
        self.total_steps = (train.num_steps if train.num_steps > 0
                            else train.num_epochs * self.steps_per_epoch)
        self.remaining = RemainingTime(
            self.total_steps, self.steps_per_epoch, train.batch_size,
            run.source.num_examples(run.source.eval_split), train.epoch_eval_views,
            tuple(train.final_eval_views))
        self.log = RunLog(run, self.steps_per_epoch, self.remaining)
        self.saver = Saver(run, self.log, self.steps_per_epoch)
        self.steps = StepRunner(run, stop, self.log, self.steps_per_epoch, self.saver.diverged)
        self.saver.epoch_means = self.steps.epoch_means
        self.evaluations = Evaluations(run, self.steps_per_epoch, reuse_logged=True,
                                       timed=self.remaining.evaluation_measured)
        self.end_of_epoch = EpochEnd(run, self.log, self.evaluations, self.saver,
                                     self.steps.epoch_means, self.steps_per_epoch)

    def completion(self) -> dict[str, Any] | None:
        """The outcome of this run if it has already finished (nothing left to do)."""
        run = self.run
        complete = read_completion(run.workdir)
        done = run_ends(run, self.total_steps)
        return complete if done and complete and complete["step"] == run.step else None

    def train(self) -> dict[str, Any]:
        run, step = self.run, self.run.step
        self.log.bar = progress_bar(self.total_steps, run.workdir.name, "step", initial=step,
                                    enabled=run.is_chief, bar_format=OWN_ESTIMATE)
        try:
            if run.progress.get("epoch_end_pending"):  # stopped at an epoch's last step
                self.end_of_epoch(step, resumed=True)
            while (step < self.total_steps and not self.steps.stopping()
                   and not self._stopped_early()):
                epoch, start_batch = divmod(step, self.steps_per_epoch)
                run.schedule.start_epoch(epoch)
                step = self.steps.run_epoch(epoch, start_batch, step, self.total_steps,
                                            self.saver.save)
                self.steps.flush(self.total_steps)
                if step % self.steps_per_epoch == 0:
                    if self.steps.agree_now():
                        # the evaluation may outlast a preemption's grace period: it is saved
                        # as pending and done first when the run resumes
                        self.saver.save(step, epoch_end_pending=True)
                    else:
                        self.end_of_epoch(step)
        finally:
            self.steps.profiler.stop()  # a run that ends inside the profiled steps
            self.log.bar.close()
        if self.steps.agree_now():  # not into the final evaluation with a stop pending
            return self._stopped(step)
        return self._finish(step)

    def _stopped_early(self) -> bool:
        """The plateau schedule has ended the run, or the training-error target is reached."""
        return self.run.schedule.state.finished or bool(self.run.progress.get("target_reached"))

    def _stopped(self, step: int) -> dict[str, Any]:
        self.saver.save(step)
        self.run.checkpointer.wait()
        reason = (f"{self.stop.signal_name} received" if self.stop else
                  "a stop signal reached another process of this run")
        logging.warning("%s: saved a checkpoint at step %d; run the same command again to "
                        "resume", reason, step)
        return {"step": step, "interrupted": self.stop.signal_name or "another process"}

    def _finish(self, step: int) -> dict[str, Any]:
        run = self.run
        # saved (and on disk) before the final evaluation: were it to run out of memory, no
        # step since the last checkpoint would be lost
        self.saver.save(step)  # no-op when the epoch's checkpoint is at this step already
        run.checkpointer.wait()
        results = [self.evaluations.get(step, views)
                   for views in run.config.train.final_eval_views]
        self.log.pictures()
        run.checkpointer.wait()
        outcome = {"step": step, "eval": results,
                   "stopped_by_schedule": run.schedule.state.finished,
                   "train_error_target_reached": run.progress.get("target_reached")}
        if run.is_chief:
            write_atomically(run.workdir / COMPLETION_FILE, json.dumps(outcome, indent=1))
        return outcome
