"""The end of an epoch: its mean training error and the training-error target, the
evaluation, the learning-rate schedule, the best evaluation so far, and the checkpoint."""

from __future__ import annotations

from absl import logging

from alexnet_jax.training.checkpoints.saving import Saver
from alexnet_jax.training.evaluation import Evaluations
from alexnet_jax.training.records.epoch_means import EpochMeans
from alexnet_jax.training.records.run_log import RunLog


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
