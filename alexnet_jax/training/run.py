"""A run built from its config: checks, mesh, data, model and optimizer state, resumed from the
newest checkpoint that restores; the workdir's lock and the first record of each start."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from alexnet_jax.common import disk, provenance, sharding
from alexnet_jax.common.errors import UserError
from alexnet_jax.common.run_files import (CLASS_NAMES_FILE, CONFIG_FILE, EVAL_RESULTS_FILE,
                                          FORMULATION_KEYS, STATS_FILE, write_atomically)
from alexnet_jax.data import catalog, feeding, stats_files
from alexnet_jax.data.augmentation import (Preprocessing, dataset_statistics,
                                           preprocessing_from_stats)
from alexnet_jax.model import build
from alexnet_jax.model.sharded_network import count_params
from alexnet_jax.training import config_checks, optim, resume_policy
from alexnet_jax.training.checkpoints import checkpointing, recovery, workdir_lock
from alexnet_jax.training.checkpoints.workdir_lock import WorkdirLock
from alexnet_jax.training.processes import multihost
from alexnet_jax.training.records.metrics_writer import MetricsWriter
from alexnet_jax.training.schedule import Schedule
from alexnet_jax.training.state import build_train_state


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
    # what the resume did with the config's changes (resume_policy); None for a new run
    resume: resume_policy.Decision | None = None
    stats: Any = None  # the dataset statistics the inputs use (DatasetStats), if any
    # what each checkpoint records and a resume compares (resume_policy): the parts the data
    # is read in, and the data itself
    data_shards: int = 1
    data_identity: dict[str, Any] | None = None

    @property
    def step(self) -> int:
        return int(self.progress["step"])

    @property
    def is_chief(self) -> bool:
        return jax.process_index() == 0


def model_fingerprint(config: ml_collections.ConfigDict,
                      num_classes: int | None) -> dict[str, Any]:
    """What a checkpoint's arrays depend on: restoring into a different model is refused
    (resume_policy.check_same_model; `num_classes` None before the dataset is open)."""
    model = json.loads(config.model.to_json())
    for key in (*FORMULATION_KEYS, "dtype",
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

    Every check that can refuse the command (config, workdir, lock, the checkpoint's model and
    the resume policy) comes before any data is prepared and before the workdir is created or
    written, so a refused command leaves no trace."""
    config_checks.validate(config)
    mesh = build.build_mesh(config)
    config_checks.validate_for_mesh(config, mesh.shape[sharding.DATA_AXIS])
    workdir = check_workdir(workdir)
    if for_evaluation and not has_checkpoints(workdir):
        raise UserError(f"{workdir} has no checkpoint to evaluate; train first (the same command "
                        "without --mode=eval).")
    if not for_evaluation and (who := workdir_lock.holder(workdir)):
        raise workdir_lock.in_use_error(workdir, who)  # before any data or model work
    shards = feeding.Shard.for_mesh(mesh).count
    check_before_data(config, workdir, shards, resuming=not for_evaluation)
    source, prep, stats = open_data(config, for_evaluation)
    graphdef, params, tx, opt_state = build_train_state(config, source.num_classes, mesh)
    create_workdir(workdir)
    lock = None if for_evaluation else lock_workdir(workdir)
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints",
                                              config.train.keep_checkpoints,
                                              owner=not for_evaluation)
    checkpointer.bytes_needed = checkpointing.tree_bytes(params, opt_state)
    o = config.optimizer
    schedule = Schedule(config.schedule, optim.initial_learning_rate(
        o.learning_rate, config.train.batch_size, o.lr_scaling), warmup_start=o.learning_rate)
    fingerprint = model_fingerprint(config, source.num_classes)
    data = resume_policy.data_identity(source)
    decisions = []
    try:
        def check(step: int, progress: dict[str, Any]) -> None:
            where = f"{checkpointer.directory}/{step}"
            if for_evaluation:
                resume_policy.check_same_model(progress.get("fingerprint"), fingerprint, where)
            else:  # another model and refused keys, named at once
                decisions.append(resume_policy.check_resume(config, progress, workdir, shards,
                                                            fingerprint, where))
            resume_policy.check_same_data(progress.get("data"), data, where, for_evaluation)

        restored = restore(checkpointer, params, opt_state, check, not for_evaluation)
    except UserError:
        checkpointer.close()
        if lock:
            lock.release()
        raise
    params, opt_state, progress = restored or (params, opt_state, {
        "step": 0, "epoch": 0, "fingerprint": fingerprint, "best": None})
    decision = None
    if restored is not None:
        schedule.load_dict(progress["schedule"])
        if decisions:  # the restored checkpoint's (the last checked)
            decision = decisions[-1]
            previous, _ = resume_policy.previous_config(progress, workdir)
            opt_state = resume_policy.apply(decision, config, previous, opt_state, schedule,
                                            progress)
    writer = (MetricsWriter(workdir, enabled=jax.process_index() == 0) if not for_evaluation
              else MetricsWriter(workdir, enabled=jax.process_index() == 0,
                                 jsonl_name=EVAL_RESULTS_FILE, tensorboard=False))
    return Run(config, workdir, mesh, source, prep, graphdef, params, opt_state, tx, schedule,
               checkpointer, writer, count_params(params), progress, lock, decision, stats,
               shards, data)


def newest_progress(workdir: Path) -> dict[str, Any] | None:
    """The progress record of the workdir's newest checkpoint whose record reads (None
    without one); reads only."""
    if not has_checkpoints(workdir):
        return None
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=1 << 30,
                                              asynchronous=False)
    try:
        for step in sorted(checkpointer.all_steps(), reverse=True):
            try:
                return checkpointer.restore_progress(step)
            except Exception:  # noqa: BLE001 - a damaged record: the restore reports it
                continue
    finally:
        checkpointer.close()
    return None


def check_before_data(config: ml_collections.ConfigDict, workdir: Path, data_shards: int,
                      resuming: bool) -> None:
    """The refusals that need only the newest checkpoint's record: another model (its class
    count aside, known once the data is open), and, when `resuming` training, a config change
    the resume policy refuses. Made before any data is prepared."""
    progress = newest_progress(workdir)
    if progress is None:
        return
    fingerprint, where = model_fingerprint(config, None), str(workdir / "checkpoints")
    if resuming:  # another model and refused keys, named at once
        resume_policy.check_resume(config, progress, workdir, data_shards, fingerprint, where,
                                   compare_classes=False)
    else:
        resume_policy.check_same_model(progress.get("fingerprint"), fingerprint, where,
                                       compare_classes=False)


def open_data(config: ml_collections.ConfigDict, for_evaluation: bool):
    """The source (prepared by process 0 first), its preprocessing and its statistics (None
    when none are needed; computed by process 0 first likewise)."""
    source = multihost.chief_first(lambda: catalog.open_dataset(config), "prepare dataset")
    if not for_evaluation and feeding.train_steps_per_epoch(source, config.train.batch_size) == 0:
        raise UserError(f"the training split has fewer images "
                        f"({source.num_examples(source.train_split)}) than one batch "
                        f"(train.batch_size={config.train.batch_size}); lower the batch size.")
    stats = multihost.chief_first(lambda: dataset_statistics(
        config, source, progress=jax.process_index() == 0), "dataset statistics")
    prep = preprocessing_from_stats(config, stats, getattr(source, "prepared_storage", None))
    return source, prep, stats


def restore(checkpointer: checkpointing.Checkpointer, params, opt_state, check,
            set_aside: bool):
    """(params, opt_state, progress) of the newest checkpoint that restores, or None; a
    checkpoint `check` (called with its step and progress record) refuses is refused
    (UserError)."""
    newest = recovery.restore_newest(
        checkpointer, checkpointing.abstract_like(params),
        checkpointing.abstract_like(opt_state), check, set_aside=set_aside)
    if newest is None:
        return None
    step, restored = newest
    logging.info("restored the checkpoint %s/%d", checkpointer.directory, step)
    return restored


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
    """config.json and the first metrics.jsonl line of this run: what it is, what it trains on
    and what made it (commit, package versions, platform, devices, processes)."""
    if run.is_chief:
        write_atomically(run.workdir / CONFIG_FILE, run.config.to_json_best_effort(indent=2))
        # what a trained workdir needs to run its network on new images without its dataset
        # (prediction.predict.load_workdir): the classes and the inputs' statistics
        write_atomically(run.workdir / CLASS_NAMES_FILE,
                         json.dumps(list(run.source.class_names), indent=1))
        if run.stats is not None:
            stats_files.save_stats(run.stats, run.workdir / STATS_FILE)
    run.writer.write_record({
        "event": "run_start", "num_params": run.num_params, "num_devices": jax.device_count(),
        "mesh": sharding.describe(run.mesh), "process_count": jax.process_count(),
        "formulations": build.formulations(run.config),
        "device_kind": jax.devices()[0].device_kind, "start_step": run.step,
        "dataset": run.source.name, "num_classes": run.source.num_classes,
        "train_examples": run.source.num_examples(run.source.train_split),
        "eval_examples": run.source.num_examples(run.source.eval_split),
        "skipped_images": {k: len(v) for k, v in run.source.skipped_images.items()},
        "stats_sample_size": run.prep.stats_sample_size,
        **provenance.provenance(), "time": time.time()})
