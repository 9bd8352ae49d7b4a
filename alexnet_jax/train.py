"""The training loop: build the run from its config, resume, train, evaluate, checkpoint, log."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from alexnet_jax import build, checkpointing, sharding, steps
from alexnet_jax.data import pipeline, sources
from alexnet_jax.errors import UserError
from alexnet_jax.evaluate import evaluate
from alexnet_jax.metrics_writer import MetricsWriter
from alexnet_jax.model import count_params


@dataclasses.dataclass
class Run:
    """Everything a run is made of, built once from the config."""

    config: ml_collections.ConfigDict
    workdir: Path
    mesh: Mesh
    source: sources.Source
    prep: pipeline.Preprocessing
    graphdef: Any
    params: Any
    opt_state: Any
    tx: Any
    checkpointer: checkpointing.Checkpointer
    writer: MetricsWriter
    num_params: int
    progress: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.progress["step"])


def model_fingerprint(config: ml_collections.ConfigDict, num_classes: int) -> dict[str, Any]:
    """What a checkpoint's arrays depend on: restoring into a different model is refused."""
    return {"model": json.loads(config.model.to_json()), "crop_size": config.data.crop_size,
            "num_classes": num_classes}


def prepare_workdir(workdir: Path) -> Path:
    """Create the workdir (or fail with a clear message if it cannot be written)."""
    workdir = Path(workdir).expanduser().absolute()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise UserError(f"the workdir {workdir} cannot be written ({error.strerror}). Choose a "
                        "directory you can write to with --workdir=DIR.") from error
    return workdir


def setup_run(config: ml_collections.ConfigDict, workdir: str | Path) -> Run:
    """Mesh, data, model and optimizer state, restored from the latest checkpoint if any."""
    workdir = prepare_workdir(Path(workdir))
    mesh = build.build_mesh(config)
    source = sources.open_source(config.data.name, config.data.path, config.data.data_dir)
    prep = pipeline.preprocessing_from_config(config, source,
                                              progress=jax.process_index() == 0)
    model = build.build_model(config, source.num_classes, mesh)
    graphdef, params = nnx.split(model)
    params = params.to_pure_dict()
    tx = build.build_optimizer(config)
    with jax.set_mesh(mesh):
        opt_state = jax.jit(tx.init)(params)
    train = config.train
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", train.keep_checkpoints,
                                              train.checkpoint_every_steps)
    fingerprint = model_fingerprint(config, source.num_classes)
    progress = {"step": 0, "fingerprint": fingerprint}
    latest = checkpointer.latest_step()
    if latest is not None:
        saved = checkpointer.restore_progress(latest)
        if saved.get("fingerprint") != fingerprint:
            raise UserError(
                f"the checkpoint at {checkpointer.directory}/{latest} was written by a different "
                f"model (its model config: {saved.get('fingerprint')}; this run's: {fingerprint})."
                " Use a new --workdir for a different model, or run with the original config.")
        params, opt_state, progress = checkpointer.restore(
            latest, checkpointing.abstract_like(params), checkpointing.abstract_like(opt_state))
        logging.info("resumed from %s at step %d", checkpointer.directory, latest)
    writer = MetricsWriter(workdir, enabled=jax.process_index() == 0)
    return Run(config, workdir, mesh, source, prep, graphdef, params, opt_state, tx,
               checkpointer, writer, count_params(model), progress)


def write_run_facts(run: Run) -> None:
    """config.json and the first metrics.jsonl line of this run."""
    if jax.process_index() == 0:
        (run.workdir / "config.json").write_text(run.config.to_json_best_effort(indent=2))
    run.writer.write_record({
        "event": "run_start", "num_params": run.num_params, "num_devices": jax.device_count(),
        "mesh": sharding.describe(run.mesh), "process_count": jax.process_count(),
        "device_kind": jax.devices()[0].device_kind, "start_step": run.step,
        "dataset": run.source.name, "num_classes": run.source.num_classes,
        "train_examples": run.source.num_examples(run.source.train_split),
        "eval_examples": run.source.num_examples(run.source.eval_split),
        "skipped_images": {k: len(v) for k, v in run.source.skipped_images.items()},
        "stats_sample_size": run.prep.stats_sample_size,
        "time": time.time()})


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train (resuming if the workdir has checkpoints), evaluate each epoch; final metrics."""
    run = setup_run(config, workdir)
    write_run_facts(run)
    with jax.set_mesh(run.mesh):
        try:
            return _train_loop(run)
        finally:
            run.checkpointer.close()
            run.writer.close()


def _train_loop(run: Run) -> dict[str, Any]:
    config, train = run.config, run.config.train
    steps_per_epoch = pipeline.train_steps_per_epoch(run.source, train.batch_size)
    if steps_per_epoch == 0:
        raise UserError(f"the training split has fewer images than one batch "
                        f"(train.batch_size={train.batch_size}); lower the batch size.")
    total_steps = train.num_steps if train.num_steps > 0 else train.num_epochs * steps_per_epoch
    train_step = steps.make_train_step(run.graphdef, run.tx,
                                       steps.state_shardings(run.params, run.opt_state),
                                       jax.random.key(config.seed))
    eval_step = steps.make_eval_step(run.graphdef)
    learning_rate = config.optimizer.learning_rate
    step, last_eval = run.step, None
    # Since the last log: where images/s is counted from, and how long the loop waited for data.
    window = {"step": step, "time": time.perf_counter(), "data_wait": 0.0}
    pending = None  # (step, metrics on device): fetched one step late, never stalling devices

    def flush_pending():
        done_step, metrics = pending
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not math.isfinite(metrics["loss"]):
            raise UserError(f"the training loss became {metrics['loss']} at step {done_step}; "
                            "the run stopped and kept its last good checkpoint. Lower "
                            "optimizer.learning_rate or check the data.")
        if done_step % train.log_every_steps == 0 or done_step == total_steps:
            elapsed = max(time.perf_counter() - window["time"], 1e-9)
            scalars = {**metrics, "learning_rate": learning_rate,
                       "images_per_sec": (done_step - window["step"]) * train.batch_size / elapsed,
                       "data_wait_fraction": window["data_wait"] / elapsed}
            run.writer.write_record({"step": done_step, "epoch": done_step / steps_per_epoch,
                                     "split": "train", **scalars})
            run.writer.write_scalars(done_step, scalars, "train/")
            logging.info("step %d loss %.4f lr %g %.1f img/s, waited for data %.1f%%", done_step,
                         metrics["loss"], learning_rate, scalars["images_per_sec"],
                         100 * scalars["data_wait_fraction"])
            window.update(step=done_step, time=time.perf_counter(), data_wait=0.0)

    while step < total_steps:
        epoch, start_batch = divmod(step, steps_per_epoch)
        dataset = pipeline.train_dataset(run.source, run.prep, train.batch_size, config.seed,
                                         epoch, start_batch, config.data.shuffle_buffer)
        batches = pipeline.to_device(tfds.as_numpy(dataset), run.mesh)
        while True:
            wait_start = time.perf_counter()
            batch = next(batches, None)  # the host waits here if the input pipeline is behind
            window["data_wait"] += time.perf_counter() - wait_start
            if batch is None:
                break
            run.params, run.opt_state, metrics = train_step(
                run.params, run.opt_state, batch["images"], batch["labels"],
                jnp.float32(learning_rate), jnp.int32(step))
            step += 1
            if pending is not None:
                flush_pending()
            pending = (step, metrics)
            if step % train.checkpoint_every_steps == 0:
                flush_pending()  # never checkpoint a state whose loss is not yet checked
                pending = None
                _save(run, step, epoch)
            if step >= total_steps or step % steps_per_epoch == 0:
                break
        if pending is not None:
            flush_pending()
            pending = None
        if step % steps_per_epoch == 0 or step >= total_steps:
            views = train.final_eval_views if step >= total_steps else (train.epoch_eval_views,)
            last_eval = [_evaluate_and_log(run, eval_step, step, steps_per_epoch, v)
                         for v in views]
            _save(run, step, step // steps_per_epoch, force=True)
            # evaluation is not training: restart the images/s window
            window.update(step=step, time=time.perf_counter(), data_wait=0.0)
    run.checkpointer.wait()
    return {"step": step, "eval": last_eval}


def _save(run: Run, step: int, epoch: int, force: bool = False) -> None:
    run.progress = {**run.progress, "step": step, "epoch": epoch}
    run.checkpointer.save(step, run.params, run.opt_state, run.progress, force=force)


def _evaluate_and_log(run: Run, eval_step, step: int, steps_per_epoch: int,
                      views: int) -> dict[str, Any]:
    result = evaluate(eval_step, run.params, run.source, run.prep,
                      run.config.train.eval_batch_size, run.mesh, views)
    record = {"step": step, "epoch": step / steps_per_epoch, "split": "val", **result}
    run.writer.write_record(record)
    run.writer.write_scalars(step, {k: result[k] for k in ("top1_error", "top5_error", "loss")},
                             f"val_{views}crop/")
    run.writer.flush()
    logging.info("step %d val (%d crop): top-1 error %.4f, top-5 error %.4f", step, views,
                 result["top1_error"], result["top5_error"])
    return record


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str | Path,
                     step: int | None = None) -> list[dict[str, Any]]:
    """--mode=eval: centre-crop and 10-crop errors of a workdir's latest (or given) checkpoint."""
    run = setup_run(config, workdir)
    with jax.set_mesh(run.mesh):
        if step is not None and step != run.step:
            if step not in run.checkpointer.all_steps():
                raise UserError(f"no checkpoint at step {step} in {run.checkpointer.directory}; "
                                f"available: {run.checkpointer.all_steps()}")
            run.params, run.opt_state, run.progress = run.checkpointer.restore(
                step, checkpointing.abstract_like(run.params),
                checkpointing.abstract_like(run.opt_state))
        if run.checkpointer.latest_step() is None:
            raise UserError(f"{run.workdir} has no checkpoint to evaluate; train first.")
        eval_step = steps.make_eval_step(run.graphdef)
        steps_per_epoch = max(1, pipeline.train_steps_per_epoch(run.source,
                                                                run.config.train.batch_size))
        results = [_evaluate_and_log(run, eval_step, run.step, steps_per_epoch, views)
                   for views in run.config.train.final_eval_views]
    run.checkpointer.close()
    run.writer.close()
    return results
