"""The training loop, whole: `train_and_evaluate` (--mode=train: start or resume a run, train
it, evaluate it; `evaluate_workdir`, --mode=eval's entry point, is here too), the `Trainer`'s
loop over the epochs until the last step, the schedule's end, the training-error target or a
stop, then the final checkpoint and evaluation; and `EpochEnd`, each epoch's end (its mean
training error, the evaluation, the learning-rate schedule, the best so far, the checkpoint).

What it calls lies beside it: run.py (what a run is built from), stepping.py and steps.py (one
epoch's steps), evaluation.py, and the rooms checkpoints/, processes/ and records/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import ml_collections
from absl import logging

from alexnet_jax.common.progress import OWN_ESTIMATE, progress_bar
from alexnet_jax.common.run_files import COMPLETION_FILE, read_completion, write_atomically
from alexnet_jax.data import feeding
from alexnet_jax.training import resume_policy
from alexnet_jax.training.checkpoints.saving import Saver
from alexnet_jax.training.evaluation import Evaluations, evaluate_workdir  # noqa: F401 - eval
from alexnet_jax.training.processes.preemption import StopRequest
from alexnet_jax.training.records.epoch_means import EpochMeans
from alexnet_jax.training.records.remaining_time import RemainingTime
from alexnet_jax.training.records.run_log import RunLog
from alexnet_jax.training.run import setup_run, write_run_facts
from alexnet_jax.training.stepping import StepRunner


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train (resuming if the workdir has checkpoints), evaluate, checkpoint; final metrics.

    SIGTERM or SIGINT ends the run cleanly after the current step, with a checkpoint.
    """
    run = setup_run(config, workdir)
    try:
        with jax.set_mesh(run.mesh), StopRequest() as stop:
            trainer = Trainer(run, stop)
            complete = trainer.completion()
            if complete is not None:  # a finished run: say so (and what it does not apply)
                line = resume_policy.finished_line(run.resume, run.workdir, run.step,
                                                   run_ends(run, trainer.total_steps))
                changed = run.resume is not None and bool(run.resume.applied)
                logging.log(logging.WARNING if changed else logging.INFO, "%s", line)
                return complete
            if run.lock:
                run.lock.record_holder()
            if run.is_chief:  # an extended run is not complete until it finishes again
                (run.workdir / COMPLETION_FILE).unlink(missing_ok=True)
            write_run_facts(run)
            if run.resume is not None and run.resume.applied:
                # what was applied, and how (resume_policy); silent changes move no result
                logging.warning("%s", resume_policy.applied_line(run.resume,
                                                                 run.schedule.learning_rate))
                run.writer.write_record({"step": run.step, **run.resume.event(),
                                         "learning_rate": run.schedule.learning_rate})
            return trainer.train()
    finally:
        try:
            run.checkpointer.close()
        finally:
            run.writer.close()
            if hasattr(run.source, "close"):  # a prepared folder's reading workers
                run.source.close()
            if run.lock:
                run.lock.release()


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


class EpochEnd:
    """Called with the step that ends an epoch."""

    def __init__(self, run, log: RunLog, evaluations: Evaluations, saver: Saver,
                 epoch_means: EpochMeans, steps_per_epoch: int):
        self.run, self.log, self.evaluations, self.saver = run, log, evaluations, saver
        self.epoch_means, self.steps_per_epoch = epoch_means, steps_per_epoch

    def __call__(self, step: int, resumed: bool = False) -> None:
        """The epoch's training error, evaluation, schedule and best checkpoint; `resumed`:
        owed by a run stopped at the epoch's last step (its sums come from the checkpoint)."""
        run, means = self.run, self.epoch_means
        if resumed:
            means.start(step // self.steps_per_epoch - 1, run.progress["epoch_train"])
        self.log.epoch_training_error(step, means.means())
        self._check_training_error_target(step, means.means()["top1_error"])
        # parameters that overflowed in the epoch's last update are no result to evaluate: the
        # run stops as diverged (raises) before an evaluation line could be written
        self.saver.check_finite(step)
        result = self.evaluations.get(step, run.config.train.epoch_eval_views)
        event = run.schedule.record_evaluation(result["top1_error"])
        if event:
            logging.info("learning-rate schedule at step %d: %s (learning rate now %g)", step,
                         event, run.schedule.learning_rate)
            self.log.event(step, f"schedule_{event}", learning_rate=run.schedule.learning_rate)
        best = run.progress.get("best")
        if best is None or result["top1_error"] <= best["top1_error"]:  # ties: the later one
            run.progress["best"] = {"step": step, "top1_error": result["top1_error"]}
        # resumed: the checkpoint at this step lacks the evaluation and progress; written again
        self.saver.save(step, result["top1_error"], replace=resumed)
        self.log.pictures()
        self.log.reset_window(step)  # evaluation is not training

    def _check_training_error_target(self, step: int, error: float) -> None:
        """`train.stop_at_train_error`: the run ends after the first epoch that reaches it."""
        target, epoch = self.run.config.train.stop_at_train_error, step / self.steps_per_epoch
        if target > 0 and error <= target:
            self.run.progress["target_reached"] = {"epoch": epoch, "top1_error": error}
            self.log.event(step, "train_error_target_reached", epoch=epoch, top1_error=error,
                           target=target)
            logging.info("epoch %g: mean training error %.4f <= train.stop_at_train_error=%g; "
                         "the run ends", epoch, error, target)
