"""Command line: python -m alexnet_jax.main --config=configs/default.py --workdir=DIR.

Flags only; the work is done by alexnet_jax.train.
"""

from __future__ import annotations

import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "stats"],
                  "train (resumes from the workdir's latest checkpoint), eval (evaluate a "
                  "checkpoint of the workdir, centre crop and 10 crops, without training) or "
                  "stats (compute or show the dataset's mean image and RGB PCA; no workdir).")
flags.DEFINE_integer("step", None, "With --mode=eval: the checkpoint step (default: latest).")
flags.DEFINE_string("coordinator_address", None,
                    "Multi-process runs (jax.distributed): host:port of process 0. Also read "
                    "from JAX_COORDINATOR_ADDRESS.")
flags.DEFINE_integer("num_processes", None, "Multi-process runs: number of processes "
                     "(or JAX_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "Multi-process runs: this process's index "
                     "(or JAX_PROCESS_ID).")


class _QuietLibraries(std_logging.Filter):
    """Keep the libraries' routine INFO lines (Orbax logs a dozen per checkpoint) off the
    console; their warnings and errors still show."""

    NOISY = ("/orbax/", "/tensorflow_datasets/", "/jax/_src/")

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or not any(
            part in record.pathname for part in self.NOISY)


def main(argv: list[str]) -> None:
    logging.get_absl_handler().addFilter(_QuietLibraries())
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.config is None or (FLAGS.workdir is None and FLAGS.mode != "stats"):
        _fail("both --config=configs/<name>.py and --workdir=DIR are required.")

    # TensorFlow only feeds data on the host: keep it off the accelerators JAX uses.
    import tensorflow as tf  # noqa: PLC0415
    tf.config.set_visible_devices([], "GPU")

    import jax  # noqa: PLC0415

    from alexnet_jax import train  # noqa: PLC0415
    from alexnet_jax.errors import UserError  # noqa: PLC0415

    _initialize_distributed(jax)

    logging.info("JAX %s: %d process(es), devices %s", jax.__version__, jax.process_count(),
                 jax.devices())
    try:
        if FLAGS.mode == "train":
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        elif FLAGS.mode == "eval":
            train.evaluate_workdir(FLAGS.config, FLAGS.workdir, FLAGS.step)
        else:
            _print_dataset_stats(FLAGS.config)
    except UserError as error:
        _fail(str(error))


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
    jax.distributed.initialize(coordinator_address=address, num_processes=count,
                               process_id=index)
    logging.info("process %d of %d joined the run coordinated at %s", index, count, address)


def _int_env(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _print_dataset_stats(config) -> None:
    from alexnet_jax.data import sources, stats  # noqa: PLC0415

    d = config.data
    source = sources.open_source(d.name, d.path, d.data_dir)
    computed = stats.dataset_stats(source, d.resize_size, d.stats_sample)
    print(stats.describe(computed, stats.stats_path(source, d.resize_size, d.stats_sample)))


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a one-line message instead of a traceback on a bad override."""
    try:
        return FLAGS(argv)
    except flags.Error as error:
        _fail(f"{error}. Config keys and their meaning are listed in the config file "
              "(configs/*.py); see README.md.")
    except (AttributeError, KeyError) as error:
        key = str(error).strip("\"'")
        bad = [arg for arg in argv if arg.startswith("--config.") and key in arg]
        _fail(f"unknown config key {key!r} in {bad[0] if bad else 'the overrides'}: every key "
              "must already exist in the config file (configs/*.py lists them all, each with a "
              "comment). Check its spelling and section, e.g. --config.model.lrn=False.")
    except (TypeError, ValueError) as error:
        _fail(f"invalid config value: {error}. Each key keeps the type of its default in the "
              "config file (configs/*.py).")
    return []


def run() -> None:
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
