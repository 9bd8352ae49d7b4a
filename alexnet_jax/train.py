"""A run: build it from its config, resume it, train and evaluate it, checkpoint and log it."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from alexnet_jax import (build, checkpointing, config_checks, multihost, optimizer_resume, plots,
                         sharding, steps, workdir_lock)
from alexnet_jax import device_augment, disk
from alexnet_jax.data import catalog, feeding
from alexnet_jax.data.augmentation import Preprocessing, preprocessing_from_config
from alexnet_jax.epoch_metrics import EpochMeans
from alexnet_jax.errors import UserError
from alexnet_jax.evaluate import evaluate
from alexnet_jax.metrics_writer import MetricsWriter
from alexnet_jax.preemption import StopRequest
from alexnet_jax.progress import progress_bar
from alexnet_jax.run_files import COMPLETION_FILE, EVAL_RESULTS_FILE, read_completion
from alexnet_jax.schedule import Schedule
from alexnet_jax.workdir_lock import WorkdirLock
from alexnet_jax.sharded_network import count_params


@dataclasses.dataclass
class Run:
    """Everything a run is made of, built once from the config."""

    config: ml_collections.ConfigDict
    workdir: Path
    mesh: Mesh
    source: Any  # a tfds-backed sources.Source, or synthetic.SyntheticSource
    prep: Preprocessing
    graphdef: Any
    params: Any
    opt_state: Any
    tx: Any
    schedule: Schedule
    checkpointer: checkpointing.Checkpointer
    writer: MetricsWriter
    num_params: int
    progress: dict[str, Any]  # step, epoch, best, schedule; saved in every checkpoint
    lock: WorkdirLock | None = None  # held while training (process 0); None for evaluation
    resumed_with_changes: list[str] = dataclasses.field(default_factory=list)  # optimizer.*

    @property
    def step(self) -> int:
        return int(self.progress["step"])

    @property
    def is_chief(self) -> bool:
        return jax.process_index() == 0


def model_fingerprint(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
    """What a checkpoint's arrays depend on: restoring into a different model is refused."""
    model = json.loads(config.model.to_json())
    for key in ("column_impl", "lrn_impl", "conv1_impl", "dtype",
                "dropout_rate"):  # how it computes, not what it stores
        model.pop(key, None)
    return {"model": model, "crop_size": config.data.crop_size, "num_classes": num_classes}


def check_workdir(workdir: str | Path) -> Path:
    """The workdir as an absolute path, if it is (or can be created as) a writable directory;
    creates nothing, so a run refused later leaves no trace."""
    workdir = Path(workdir).expanduser().absolute()
    existing = disk.existing_ancestor(workdir)
    if not existing.is_dir():
        what = "the workdir" if existing == workdir else f"the workdir {workdir} is inside"
        raise UserError(f"{what} {existing} is a file, not a directory. Choose a directory with "
                        "--workdir=DIR (it is created if missing).")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"the workdir {workdir} cannot be written ({existing} is not writable "
                        "for this user). Choose a directory you can write to with --workdir=DIR.")
    return workdir


def create_workdir(workdir: Path) -> None:
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"the workdir {workdir} cannot be created ({error.strerror}). Choose a "
                        "directory you can write to with --workdir=DIR.") from error


def has_checkpoints(workdir: Path) -> bool:
    directory = workdir / "checkpoints"
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def setup_run(config: ml_collections.ConfigDict, workdir: str | Path,
              for_evaluation: bool = False) -> Run:
    """Mesh, data, model and optimizer state, restored from the latest checkpoint if any.

    Every check that can refuse the run (config, workdir, data, checkpoints) comes before the
    workdir is created or written, so a refused command leaves no trace."""
    config_checks.validate(config)
    mesh = build.build_mesh(config)
    config_checks.validate_for_mesh(config, mesh.shape[sharding.DATA_AXIS])
    workdir = check_workdir(workdir)
    if for_evaluation and not has_checkpoints(workdir):
        raise UserError(f"{workdir} has no checkpoint to evaluate; train first (the same command "
                        "without --mode=eval).")
    if not for_evaluation and (who := workdir_lock.holder(workdir)):
        raise workdir_lock.in_use_error(workdir, who)  # before any data or model work
    source = multihost.chief_first(lambda: catalog.open_dataset(config), "prepare dataset")
    if not for_evaluation and feeding.train_steps_per_epoch(source, config.train.batch_size) == 0:
        raise UserError(f"the training split has fewer images "
                        f"({source.num_examples(source.train_split)}) than one batch "
                        f"(train.batch_size={config.train.batch_size}); lower the batch size.")
    prep = multihost.chief_first(lambda: preprocessing_from_config(
        config, source, progress=jax.process_index() == 0), "dataset statistics")
    graphdef, params, tx, opt_state = build.build_train_state(config, source.num_classes, mesh)
    create_workdir(workdir)
    lock = None if for_evaluation else lock_workdir(workdir)
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints",
                                              config.train.keep_checkpoints)
    checkpointer.bytes_needed = checkpointing.tree_bytes(params, opt_state)
    schedule = Schedule(config.schedule, config.optimizer.learning_rate)
    fingerprint = model_fingerprint(config, source.num_classes)
    progress = {"step": 0, "epoch": 0, "fingerprint": fingerprint, "best": None}

    def same_model(step: int, saved: dict[str, Any]) -> None:
        if saved.get("fingerprint") != fingerprint:
            checkpointer.close()
            if lock:
                lock.release()
            raise UserError(
                f"the checkpoint at {checkpointer.directory}/{step} was written by a different "
                f"model or dataset (its: {saved.get('fingerprint')}; this run's: {fingerprint})."
                " Use a new --workdir for a different model, or run with the original config.")

    try:
        newest = checkpointer.restore_newest(
            checkpointing.abstract_like(params), checkpointing.abstract_like(opt_state),
            same_model, set_aside=not for_evaluation)
    except UserError:
        if lock:
            lock.release()
        raise
    changes = []
    if newest is not None:
        step, (params, opt_state, progress) = newest
        schedule.load_dict(progress["schedule"])
        logging.info("resumed from %s at step %d", checkpointer.directory, step)
        if not for_evaluation:
            opt_state, changes = optimizer_resume.apply_new_settings(config, progress, workdir,
                                                                     opt_state, schedule)
    writer = (MetricsWriter(workdir, enabled=jax.process_index() == 0) if not for_evaluation
              else MetricsWriter(workdir, enabled=jax.process_index() == 0,
                                 jsonl_name=EVAL_RESULTS_FILE, tensorboard=False))
    return Run(config, workdir, mesh, source, prep, graphdef, params, opt_state, tx, schedule,
               checkpointer, writer, count_params(params), progress, lock, changes)


def lock_workdir(workdir: Path) -> WorkdirLock | None:
    """Process 0 takes the workdir's lock for the whole run; every process learns whether it
    got it (a second run on a busy workdir stops on all its processes)."""
    lock, error = None, None
    if jax.process_index() == 0:
        lock = WorkdirLock(workdir)
        try:
            lock.acquire()
        except UserError as caught:
            error, lock = caught, None
    if jax.process_count() > 1:
        got_it = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not got_it and error is None:
            error = workdir_lock.in_use_error(workdir, workdir_lock.holder(workdir) or
                                              "another run")
    if error is not None:
        raise error
    return lock


def write_run_facts(run: Run) -> None:
    """config.json and the first metrics.jsonl line of this run."""
    if run.is_chief:
        (run.workdir / "config.json").write_text(run.config.to_json_best_effort(indent=2))
    run.writer.write_record({
        "event": "run_start", "num_params": run.num_params, "num_devices": jax.device_count(),
        "mesh": sharding.describe(run.mesh), "process_count": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind, "start_step": run.step,
        "dataset": run.source.name, "num_classes": run.source.num_classes,
        "train_examples": run.source.num_examples(run.source.train_split),
        "eval_examples": run.source.num_examples(run.source.eval_split),
        "skipped_images": {k: len(v) for k, v in run.source.skipped_images.items()},
        "stats_sample_size": run.prep.stats_sample_size, "time": time.time()})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train (resuming if the workdir has checkpoints), evaluate, checkpoint; final metrics.

    SIGTERM or SIGINT ends the run cleanly after the current step, with a checkpoint.
    """
    run = setup_run(config, workdir)
    try:
        with jax.set_mesh(run.mesh), StopRequest() as stop:
            trainer = Trainer(run, stop)
            complete = trainer.completion()
            if complete is not None:  # a finished run: say so and change nothing
                logging.info("the run in %s is already complete (step %d)", run.workdir,
                             run.step)
                return complete
            if run.lock:
                run.lock.record_holder()
            write_run_facts(run)
            if run.resumed_with_changes:
                run.writer.write_record({"step": run.step, "event": "optimizer_changed_on_resume",
                                         "changes": run.resumed_with_changes,
                                         "learning_rate": run.schedule.learning_rate})
            return trainer.train()
    finally:
        try:
            run.checkpointer.close()
        finally:
            run.writer.close()
            if run.lock:
                run.lock.release()


class Trainer:
    """The loop over steps and epochs of one run."""

    def __init__(self, run: Run, stop: StopRequest):
        self.run, self.stop = run, stop
        train = run.config.train
        self.batch_size = train.batch_size
        self.steps_per_epoch = feeding.train_steps_per_epoch(run.source, train.batch_size)
        self.total_steps = (train.num_steps if train.num_steps > 0
                            else train.num_epochs * self.steps_per_epoch)
        self.train_step = steps.make_train_step(
            run.graphdef, run.tx, steps.state_shardings(run.params, run.opt_state),
            jax.random.key(run.config.seed))
        # A stop requested on any process is agreed through the training step (every
        # process's vote goes in, their maximum comes out with the metrics), so every process
        # reads the same answer after the same step and all stop and save together.
        self.votes = steps.StopVotes(run.mesh)
        self.stop_agreed = False
        self.all_finite = jax.jit(steps.all_finite)
        self.eval_step = steps.make_eval_step(run.graphdef)
        # prepared uint8 crops are finished (mean, lighting) on the devices
        self.finish = device_augment.make_finisher(run.prep.mean_square(),
                                                   run.prep.lighting_basis(), run.mesh)
        self.pending = None  # (step, metrics on device): fetched one step late
        self.epoch_means = EpochMeans()  # the epoch's mean training error (paper Figure 1)
        self.evaluations = {}  # (step, views) -> record, so the end never evaluates twice
        self.window = {}     # since the last log line: start step, time, data wait
        self.bar = None

    # -- the loop -----------------------------------------------------------------------------

    def completion(self) -> dict[str, Any] | None:
        """The outcome of this run if it has already finished (nothing left to do)."""
        run = self.run
        done = run.step >= self.total_steps or self._stopped_early()
        complete = read_completion(run.workdir)
        return complete if done and complete and complete["step"] == run.step else None

    def train(self) -> dict[str, Any]:
        run = self.run
        step = run.step
        self._reset_window(step)
        self.bar = progress_bar(self.total_steps, run.workdir.name, "step", initial=step,
                                enabled=run.is_chief)
        try:
            if run.progress.get("epoch_end_pending"):  # stopped at an epoch's last step
                self._end_of_epoch(step, resumed=True)
            while step < self.total_steps and not self._stopping() and not self._stopped_early():
                epoch, start_batch = divmod(step, self.steps_per_epoch)
                run.schedule.start_epoch(epoch)
                step = self._train_epoch(epoch, start_batch, step)
                self._flush()
                if step % self.steps_per_epoch == 0:
                    if self._stopping():
                        # the evaluation may outlast a preemption's grace period: it is saved
                        # as pending and done first when the run resumes
                        self._save(step, epoch_end_pending=True)
                    else:
                        self._end_of_epoch(step)
        finally:
            self.bar.close()
        if self._stopping():
            self._save(step)
            run.checkpointer.wait()
            logging.warning("%s: saved a checkpoint at step %d; run the same command again to "
                            "resume", self._stop_reason(), step)
            return {"step": step, "interrupted": self.stop.signal_name or "another process"}
        return self._finish(step)

    def _stopping(self) -> bool:
        """Whether the run stops now: in one process at its own signal; in several only when
        all agree (the vote of the step before), so that all stop after the same step."""
        if jax.process_count() == 1:
            return bool(self.stop)
        return self.stop_agreed

    def _stop_reason(self) -> str:
        if self.stop:
            return f"{self.stop.signal_name} received"
        return "a stop signal reached another process of this run"

    def _stopped_early(self) -> bool:
        """The plateau schedule has ended the run, or the training-error target is reached."""
        return self.run.schedule.state.finished or bool(self.run.progress.get("target_reached"))

    def _train_epoch(self, epoch: int, start_batch: int, step: int) -> int:
        run, train = self.run, self.run.config.train
        self.epoch_means.start(epoch, run.progress.get("epoch_train") if start_batch else None)
        batches = feeding.to_device(catalog.train_batches(
            run.source, run.prep, run.config, epoch, start_batch,
            feeding.Shard.for_mesh(run.mesh)), run.mesh)
        learning_rate = jnp.float32(run.schedule.learning_rate)
        while step < self.total_steps:
            wait_start = time.perf_counter()
            batch = next(batches, None)  # the host waits here if the input pipeline is behind
            self.window["data_wait"] += time.perf_counter() - wait_start
            if batch is None:
                break
            images = self.finish(batch) if "pixels" in batch else batch["images"]
            run.params, run.opt_state, metrics = self.train_step(
                run.params, run.opt_state, images, batch["labels"], learning_rate,
                jnp.int32(step), self.votes(bool(self.stop)))
            step += 1
            self._flush()
            self.pending = (step, metrics)
            self.epoch_means.add(metrics)
            self.bar.update(1)
            # (at the end of an epoch the checkpoint waits for the evaluation: "best" needs it)
            if step % train.checkpoint_every_steps == 0 and step % self.steps_per_epoch:
                self._flush()  # never checkpoint a state whose loss is not yet checked
                self._save(step)
            if self._stopping() or step % self.steps_per_epoch == 0:
                break
        return step

    def _flush(self) -> None:
        """Fetch the pending step's metrics (by now the devices are on the next step)."""
        if self.pending is None:
            return
        (step, metrics), self.pending = self.pending, None
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        self.stop_agreed = self.stop_agreed or metrics.pop("stop") > 0
        if not math.isfinite(metrics["loss"]):
            self._diverged(step, f"the training loss became {metrics['loss']} at step {step}",
                           metrics["loss"])
        if step % self.run.config.train.log_every_steps == 0 or step == self.total_steps:
            self._log_training(step, metrics)

    def _diverged(self, step: int, what: str, loss: float) -> None:
        # recorded so that a study's sweep can score this learning rate as failed
        self.run.writer.write_record({"event": "diverged", "step": step, "loss": str(loss)})
        last_good = self.run.checkpointer.latest_step()
        kept = (f"kept its last good checkpoint (step {last_good})" if last_good is not None
                else "has no checkpoint to go back to (none was written before)")
        raise UserError(
            f"{what}; the run stopped and {kept}. Lower optimizer.learning_rate (the same "
            "command with --config.optimizer.learning_rate=... resumes from that checkpoint "
            "with the new rate), or check the data and the initialisation.")

    def _log_training(self, step: int, metrics: dict[str, float]) -> None:
        run = self.run
        elapsed = max(time.perf_counter() - self.window["time"], 1e-9)
        scalars = {**metrics, "learning_rate": run.schedule.learning_rate,
                   "images_per_sec": (step - self.window["step"]) * self.batch_size / elapsed,
                   "data_wait_fraction": self.window["data_wait"] / elapsed}
        epoch = step / self.steps_per_epoch
        run.writer.write_record({"step": step, "epoch": epoch, "split": "train", **scalars})
        run.writer.write_scalars(step, scalars, "train/")
        self.bar.set_postfix(epoch=f"{epoch:.2f}", loss=f"{metrics['loss']:.4f}",
                             lr=f"{run.schedule.learning_rate:g}",
                             img_s=f"{scalars['images_per_sec']:.1f}")
        self._reset_window(step)

    def _reset_window(self, step: int) -> None:
        self.window = {"step": step, "time": time.perf_counter(), "data_wait": 0.0}

    # -- evaluation, schedule, checkpoints ------------------------------------------------------

    def _end_of_epoch(self, step: int, resumed: bool = False) -> None:
        """The epoch's training error, evaluation, schedule and best checkpoint; `resumed`:
        owed by a run stopped at the epoch's last step (its sums come from the checkpoint)."""
        run = self.run
        if resumed:
            self.epoch_means.start(step // self.steps_per_epoch - 1, run.progress["epoch_train"])
        self._log_epoch_training_error(step)
        result = self._evaluate(step, run.config.train.epoch_eval_views)
        event = run.schedule.record_evaluation(result["top1_error"])
        if event:
            logging.info("learning-rate schedule at step %d: %s (learning rate now %g)", step,
                         event, run.schedule.learning_rate)
            run.writer.write_record({"step": step, "event": f"schedule_{event}",
                                     "learning_rate": run.schedule.learning_rate})
        best = run.progress.get("best")
        if best is None or result["top1_error"] <= best["top1_error"]:  # ties: the later one
            run.progress["best"] = {"step": step, "top1_error": result["top1_error"]}
        # resumed: the checkpoint at this step lacks the evaluation and progress; written again
        self._save(step, result["top1_error"], replace=resumed)
        self._write_pictures()
        self._reset_window(step)  # evaluation is not training

    def _log_epoch_training_error(self, step: int) -> None:
        """The epoch's mean training loss and errors; the training-error target check."""
        run = self.run
        means = self.epoch_means.means()
        epoch = step / self.steps_per_epoch
        run.writer.write_record({"step": step, "epoch": epoch, "split": "train_epoch", **means})
        run.writer.write_scalars(step, {k: means[k] for k in ("loss", "top1_error", "top5_error")},
                                 "train_epoch/")
        target = run.config.train.stop_at_train_error
        if target > 0 and means["top1_error"] <= target:
            run.progress["target_reached"] = {"epoch": epoch, "top1_error": means["top1_error"]}
            run.writer.write_record({"step": step, "event": "train_error_target_reached",
                                     "epoch": epoch, "top1_error": means["top1_error"],
                                     "target": target})
            logging.info("epoch %g: mean training error %.4f <= train.stop_at_train_error=%g; "
                         "the run ends", epoch, means["top1_error"], target)

    def _evaluate(self, step: int, views: int) -> dict[str, Any]:
        run = self.run
        if (step, views) not in self.evaluations:
            result = evaluate(self.eval_step, run.params, run.source, run.prep,
                              run.config.train.eval_batch_size, run.mesh, views)
            self.evaluations[step, views] = log_evaluation(run, step, step / self.steps_per_epoch,
                                                           result)
        return self.evaluations[step, views]

    def _finish(self, step: int) -> dict[str, Any]:
        run = self.run
        # saved (and on disk) before the final evaluation: were it to run out of memory, no
        # step since the last checkpoint would be lost
        self._save(step)  # no-op when the epoch's checkpoint is at this step already
        run.checkpointer.wait()
        results = [self._evaluate(step, views) for views in run.config.train.final_eval_views]
        self._write_pictures()
        run.checkpointer.wait()
        outcome = {"step": step, "eval": results,
                   "stopped_by_schedule": run.schedule.state.finished,
                   "train_error_target_reached": run.progress.get("target_reached")}
        if run.is_chief:
            (run.workdir / COMPLETION_FILE).write_text(json.dumps(outcome, indent=1))
        return outcome

    def _save(self, step: int, top1_error: float | None = None,
              epoch_end_pending: bool = False, replace: bool = False) -> None:
        """Checkpoint the state after `step`, if its parameters are all finite (a loss that
        was finite before the update says nothing about the parameters after it)."""
        run = self.run
        if not bool(self.all_finite(run.params)):
            self._diverged(step, f"the parameters became non-finite at step {step}", math.nan)
        run.progress.update(step=step, epoch=step / self.steps_per_epoch,
                            schedule=run.schedule.to_dict(),
                            epoch_train=self.epoch_means.to_dict(),
                            optimizer=optimizer_resume.optimizer_settings(run.config),
                            epoch_end_pending=epoch_end_pending)
        run.checkpointer.save(step, run.params, run.opt_state, run.progress, top1_error, replace)

    def _write_pictures(self) -> None:
        """conv1's filters (gathered by every process: each may hold one column) and the
        learning curves, written by process 0."""
        run = self.run
        kernel = multihost.gather(run.params["conv1"]["kernel"])
        if not run.is_chief:
            return
        if kernel.ndim == 4:  # a network without columns
            kernel = kernel[None]
        grid = plots.filter_grid(kernel)
        run.writer.write_images(run.step, "conv1_filters", grid[None])
        plots.save_filter_grid(kernel, run.workdir / plots.FILTERS_FILE)
        plots.plot_learning_curves(run.workdir)
        run.writer.flush()


def log_evaluation(run: Run, step: int, epoch: float, result: dict[str, Any]) -> dict[str, Any]:
    """One evaluation line in metrics.jsonl and TensorBoard."""
    record = {"step": step, "epoch": epoch, "split": "val", **result}
    run.writer.write_record(record)
    run.writer.write_scalars(step, {k: result[k] for k in ("top1_error", "top5_error", "loss")},
                             f"val_{result['crops']}crop/")
    run.writer.flush()
    logging.info("step %d validation (%d crop%s): top-1 error %.4f, top-5 error %.4f", step,
                 result["crops"], "s" if result["crops"] > 1 else "", result["top1_error"],
                 result["top5_error"])
    return record


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str | Path,
                     step: int | None = None) -> list[dict[str, Any]]:
    """--mode=eval: the final evaluation views of a workdir's latest (or given) checkpoint,
    appended to its eval_results.jsonl (the training's metrics.jsonl is left untouched)."""
    run = setup_run(config, workdir, for_evaluation=True)
    try:
        with jax.set_mesh(run.mesh):
            if step is not None and step != run.step:
                if step not in run.checkpointer.all_steps():
                    raise UserError(f"no checkpoint at step {step} in "
                                    f"{run.checkpointer.directory}; available: "
                                    f"{run.checkpointer.all_steps()}")
                run.params, run.opt_state, run.progress = run.checkpointer.restore(
                    step, checkpointing.abstract_like(run.params),
                    checkpointing.abstract_like(run.opt_state))
            eval_step = steps.make_eval_step(run.graphdef)
            steps_per_epoch = max(1, feeding.train_steps_per_epoch(
                run.source, run.config.train.batch_size))
            views_list = run.config.train.final_eval_views or (1,)
            return [log_evaluation(run, run.step, run.step / steps_per_epoch,
                                   evaluate(eval_step, run.params, run.source, run.prep,
                                            run.config.train.eval_batch_size, run.mesh, views))
                    for views in views_list]
    finally:
        run.checkpointer.close()
        run.writer.close()
