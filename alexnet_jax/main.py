"""Command line: python -m alexnet_jax.main --config=configs/default.py --workdir=DIR.

Flags only; the work is done by alexnet_jax.training.train.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging as std_logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

# Notices of the libraries that are not the user's business, silenced before the libraries load
# (a user's own setting wins): TensorFlow's C++ INFO lines (its CPU-feature message, which also
# made absl print that logs before its initialisation go to stderr) and its oneDNN notice,
# whose custom operations are off (TensorFlow only decodes and crops images here). Its
# warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

FLAGS = flags.FLAGS
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "stats", "prepare", "predict", "features"],
                  "train (resumes from the workdir's latest checkpoint), eval (evaluate a "
                  "checkpoint of the workdir, centre crop and 10 views, without training), "
                  "stats (compute or show the dataset's mean image and RGB PCA; no workdir) or "
                  "prepare (prepare the dataset, its 256 x 256 squares and statistics; no "
                  "workdir), predict (top-5 classes of --images with the workdir's latest "
                  "checkpoint) or features (fc7 vectors of --split or --images to --output).")
flags.DEFINE_integer("step", None, "With --mode=eval, predict or features: the checkpoint step "
                     "(default: latest).")
flags.DEFINE_multi_string("images", None, "With --mode=predict or features: image files or "
                          "folders (more may follow as plain arguments).")
flags.DEFINE_enum("views", "1", ["1", "10"], "With --mode=predict: the centre crop (1) or the "
                  "paper's 10 views, softmax averaged.")
flags.DEFINE_enum("split", "val", ["train", "val"],
                  "With --mode=features: the split (train or val). With --mode=eval: val, "
                  "or train for the training images' centre crops evaluated like val's.")
flags.DEFINE_string("output", None, "With --mode=features: the NAME.npy file to write (an "
                    "index NAME.index.jsonl is written beside it).")
flags.DEFINE_integer("limit", 0, "With --mode=features: at most this many images of the split "
                     "(0: all).")
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process runs (jax.distributed): host:port of process 0. Also read "
                    "from JAX_COORDINATOR_ADDRESS.")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes "
                     "(or JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index "
                     "(or JAX_PROCESS_ID).")
flags.DEFINE_integer("heartbeat_timeout_seconds", 60,
                     "Multi-process runs: a process silent for this long counts as lost, and "
                     "the others stop (exit code 3); a killed process is noticed at once.")


class _QuietLibraries(std_logging.Filter):
    """Keep the libraries' routine INFO lines (Orbax logs a dozen per checkpoint) off the
    console; their warnings and errors still show."""

    NOISY = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/")
    # Orbax warns at every save without metrics once it tracks the best checkpoint; ours are
    # the checkpoints between epoch ends, which are never candidates for the best.
    EXPECTED = ("Requested `tracked_metric`; did not provide metrics.",)
    # tensorflow-datasets' routine warnings, each expected in this project's use of it: its
    # builders are configured here (not registered configs), a folder not yet prepared has no
    # dataset_info.json, and its own tf.data code still reads a deprecated attribute
    EXPECTED_STARTS = ("Using custom data configuration", "Variant folder ")
    EXPECTED_PARTS = ("dtype` is deprecated. Please change",)

    def filter(self, record: std_logging.LogRecord) -> bool:
        from alexnet_jax.training.checkpoints.checkpointing import is_disk_full  # noqa: PLC0415
        from alexnet_jax.training.processes.multihost import is_lost_peer  # noqa: PLC0415

        # Orbax's save threads log a full disk, or a peer process lost mid-save, with a
        # traceback; the run stops on the same error and says it in one paragraph. (A lost peer
        # only from Orbax: a save runs on a started runtime, so asking it the process count
        # here starts nothing, and other libraries' errors that look alike still show.)
        if record.exc_info and (is_disk_full(record.exc_info[1])
                                or ("/orbax/" in record.pathname
                                    and is_lost_peer(record.exc_info[1]))):
            return False
        message = record.getMessage()
        if (message in self.EXPECTED or message.startswith(self.EXPECTED_STARTS)
                or any(part in message for part in self.EXPECTED_PARTS)):
            return False
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self.NOISY)


def _drop_late_wakeups_of_closed_loops(previous: Callable[[Any], None]) -> Callable[[Any], None]:
    """A sys.unraisablehook that drops one known harmless message and passes on the rest.

    When an Orbax read or write fails (a full disk, a truncated checkpoint), the event loop that
    awaited it closes while tensorstore's other operations of the same checkpoint are still in
    flight; when they finish, tensorstore's thread tries to wake the closed loop and Python
    prints "Exception ignored ... RuntimeError: Event loop is closed" with a traceback, in the
    middle of our one-paragraph message. Nothing is lost: the loop has no one left to wake."""

    def hook(unraisable) -> None:
        frames = traceback.extract_tb(unraisable.exc_traceback)
        if (isinstance(unraisable.exc_value, RuntimeError)
                and str(unraisable.exc_value) == "Event loop is closed"
                and frames and frames[0].name == "call_soon_threadsafe"):
            return
        previous(unraisable)

    return hook


def main(argv: list[str]) -> None:
    logging.get_absl_handler().addFilter(_QuietLibraries())
    sys.unraisablehook = _drop_late_wakeups_of_closed_loops(sys.unraisablehook)
    extra_images = argv[1:] if FLAGS.mode in ("predict", "features") else []
    if len(argv) > 1 and not extra_images:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}. A flag takes its value after '=' "
              "(--config.model.lrn=False, --workdir=DIR); python -m alexnet_jax.main --help "
              "lists the flags.")
    if FLAGS.config is None or (not FLAGS.workdir and FLAGS.mode not in ("stats", "prepare")):
        # an empty --workdir= (an unset shell variable) would mean the current directory
        _fail("both --config=configs/<name>.py and --workdir=DIR are required (a non-empty "
              "DIR).")

    # TensorFlow only feeds data on the host: keep it off the accelerators JAX uses. (It may be
    # absent: the synthetic source needs none.)
    try:
        import tensorflow as tf  # noqa: PLC0415
        tf.config.set_visible_devices([], "GPU")
    except ImportError:
        pass

    import jax  # noqa: PLC0415

    from alexnet_jax.common.errors import UserError  # noqa: PLC0415
    from alexnet_jax.training import train  # noqa: PLC0415
    from alexnet_jax.training.processes import multihost  # noqa: PLC0415

    _initialize_distributed(jax)

    logging.info("JAX %s: %d process(es), devices %s", jax.__version__, jax.process_count(),
                 jax.devices())
    try:
        if FLAGS.mode == "train":
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        elif FLAGS.mode == "eval":
            train.evaluate_workdir(FLAGS.config, FLAGS.workdir, FLAGS.step, FLAGS.split)
        elif FLAGS.mode in ("predict", "features"):
            _predict_or_features(FLAGS.config, [*(FLAGS.images or []), *extra_images])
        else:
            _print_dataset_stats(FLAGS.config)  # stats or prepare: both prepare what is missing
    except UserError as error:
        _fail(str(error))
    except Exception as error:  # noqa: BLE001 - only a lost peer is handled; the rest re-raised
        if multihost.is_lost_peer(error):
            multihost.exit_lost_process(error, FLAGS.heartbeat_timeout_seconds)
        raise


def _initialize_distributed(jax) -> None:
    """Join a multi-process run when a coordinator is named (flags or environment)."""
    address = FLAGS.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    count = FLAGS.num_processes or _int_env("JAX_NUM_PROCESSES")
    index = FLAGS.process_id if FLAGS.process_id is not None else _int_env("JAX_PROCESS_ID")
    if address is None and count is None:
        return  # a single process (or a cluster JAX detects by itself: SLURM, TPU pods)
    if address is None or count is None or index is None:
        _fail("a multi-process run needs all of --coordinator_address, --num_processes and "
              "--process_id (or JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID).")
    from alexnet_jax.training.processes import multihost  # noqa: PLC0415

    multihost.initialize(address, count, index, FLAGS.heartbeat_timeout_seconds)
    logging.info("process %d of %d joined the run coordinated at %s", index, count, address)


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        _fail(f"{name}={value!r} must be an integer.")


def _print_dataset_stats(config) -> None:
    from alexnet_jax.data import catalog  # noqa: PLC0415
    from alexnet_jax.data.published_stats import describe_stats  # noqa: PLC0415
    from alexnet_jax.data.augmentation import preprocessing_from_config  # noqa: PLC0415
    from alexnet_jax.training import config_checks  # noqa: PLC0415

    config_checks.validate(config)  # prepare what the same config would train on, or refuse
    source = catalog.open_dataset(config, preparing=True)
    where = (getattr(getattr(source, "builder", None), "data_dir", None)
             or getattr(source, "folder", "(not stored)"))
    print(f"dataset {source.name}: {source.num_examples(source.train_split)} training and "
          f"{source.num_examples(source.eval_split)} evaluation images at {where}")
    if FLAGS.mode == "prepare":
        preprocessing_from_config(config, source)
        if getattr(source, "name", None) == "prepared":  # ArrayRecord: the folder to train from
            print(f"train from it without TensorFlow: --config.data.name=prepared "
                  f"--config.data.path={source.folder}")
        return
    d = config.data
    if hasattr(source, "dataset_stats"):  # synthetic, or a prepared folder without TensorFlow
        print(describe_stats(source.dataset_stats(d.resize_size)))
        return
    from alexnet_jax.data import stats  # noqa: PLC0415

    computed = stats.dataset_stats(source, d.resize_size, d.stats_sample)
    print(describe_stats(computed, stats.stats_path(source, d.resize_size, d.stats_sample)))


def _predict_or_features(config, images: list[str]) -> None:
    import json  # noqa: PLC0415

    from alexnet_jax.common.errors import UserError  # noqa: PLC0415
    from alexnet_jax.prediction import predict  # noqa: PLC0415

    if FLAGS.mode == "predict" and not images:
        raise UserError("--mode=predict needs --images=PATH (files or folders; more paths may "
                        "follow).")
    if FLAGS.mode == "features" and not FLAGS.output:
        raise UserError("--mode=features needs --output=FILE.npy.")
    run = predict.load_trained(config, FLAGS.workdir, FLAGS.step)
    if FLAGS.mode == "features":
        rows, vectors, index = predict.write_features(
            run, Path(FLAGS.output), FLAGS.split, images or None, FLAGS.limit)
        print(f"wrote {rows} fc7 vectors of checkpoint {run.step} to {vectors} (index: {index})")
        return
    failed = total = 0
    for record in predict.predict(run, images, int(FLAGS.views)):
        print(json.dumps(record), flush=True)
        total += 1
        failed += "error" in record
    if failed:
        others = ("; the others were predicted" if failed < total else "")
        raise UserError(f"{failed} of {total} image{'s' if total > 1 else ''} could not be "
                        f"read (the line{'s' if failed > 1 else ''} above say"
                        f"{'' if failed > 1 else 's'} why){others}.")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-paragraph message instead of a traceback for a missing
    or broken config file and a bad override (checked before TensorFlow or JAX is imported)."""
    config_path = _flag_value(argv, "config")
    if config_path is not None:
        config = _load_config_file(config_path)
        for arg in argv[1:]:
            if arg.startswith("--config."):
                _check_override_key(config, arg)
    try:
        return FLAGS(argv)
    except flags.Error as error:
        about_config = "--config" in str(error)
        _fail(f"{error}." + (" Config keys and their meaning are listed in the config file "
                             "(configs/*.py); see docs/config.md." if about_config else
                             " python -m alexnet_jax.main --help lists the flags."))
    except (TypeError, ValueError) as error:
        _fail(f"invalid config value: {error}. Each key keeps the type of its default in the "
              "config file (configs/*.py).")
    return []


def _flag_value(argv: list[str], name: str) -> str | None:
    """The value of --name=VALUE or --name VALUE in argv (None when absent)."""
    for index, arg in enumerate(argv[1:], 1):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and index + 1 < len(argv):
            return argv[index + 1]
    return None


def _load_config_file(path: str):
    """The ConfigDict of a config file, or a clear failure naming the configs that exist."""
    file = Path(path.split(":", 1)[0])
    existing = ", ".join(f"configs/{p.name}" for p in sorted(CONFIGS_DIR.glob("*.py"))
                         if p.name != "__init__.py")
    if not file.is_file():
        _fail(f"the config file {file} does not exist. The configs are: {existing} (paths "
              f"relative to {CONFIGS_DIR.parent}); e.g. --config=configs/imagenette.py.")
    try:
        spec = importlib.util.spec_from_file_location("alexnet_config_check", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.get_config()
    except Exception as error:  # noqa: BLE001 - any failure of the user's file: say which
        _fail(f"the config file {file} could not be loaded ({type(error).__name__}: {error}). "
              f"A config file defines get_config() returning an ml_collections.ConfigDict; "
              f"the project's configs are: {existing}.")


def _all_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        full = f"{prefix}{key}"
        keys.append(full)
        if hasattr(value, "items"):
            keys += _all_keys(value, full + ".")
    return keys


def _check_override_key(config, arg: str) -> None:
    """Fail on --config.<key>=... whose key the config does not have, naming the closest."""
    key = arg[len("--config."):].split("=", 1)[0]
    node = config
    for part in key.split("."):
        if not hasattr(node, "items") or part not in node:
            close = difflib.get_close_matches(key, _all_keys(config), n=1, cutoff=0.5)
            hint = (f"; did you mean --config.{close[0]}?" if close else
                    "; every key must already exist in the config file (configs/*.py lists "
                    "them all, each with a comment).")
            _fail(f"{arg}: the config has no key {key!r}{hint}")
        node = node[part]


def run() -> None:
    from alexnet_jax.common import host_memory  # noqa: PLC0415

    host_memory.restart_with_host_allocator()  # first: a restart loses what ran before it
    argv = sys.argv
    multi_process = (_flag_value(argv, "coordinator_address") or _flag_value(argv, "num_processes")
                     or os.environ.get("JAX_COORDINATOR_ADDRESS"))
    if multi_process:
        from alexnet_jax.training.processes import supervisor  # noqa: PLC0415

        if not supervisor.is_supervised():  # the parent: report a lost peer cleanly
            sys.exit(supervisor.run_child(
                argv[1:], me=_int_or(_flag_value(argv, "process_id"), "JAX_PROCESS_ID", 0),
                count=_int_or(_flag_value(argv, "num_processes"), "JAX_NUM_PROCESSES", None),
                heartbeat_timeout=_int_or(_flag_value(argv, "heartbeat_timeout_seconds"), "",
                                          FLAGS["heartbeat_timeout_seconds"].default)))
    app.run(main, flags_parser=parse_flags)


def _int_or(value: str | None, env: str, default):
    value = value if value is not None else os.environ.get(env) if env else None
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default  # the child reports the bad flag


if __name__ == "__main__":
    run()
