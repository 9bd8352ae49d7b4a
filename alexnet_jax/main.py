"""Command line: python -m alexnet_jax.main --config=configs/default.py --workdir=DIR.

Flags only; the work is done by alexnet_jax.train.
"""

from __future__ import annotations

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and TensorBoard logs.")
flags.DEFINE_enum("mode", "train", ["train", "eval"],
                  "train (resumes from the workdir's latest checkpoint) or eval (evaluate a "
                  "checkpoint of the workdir, centre crop and 10 crops, without training).")
flags.DEFINE_integer("step", None, "With --mode=eval: the checkpoint step (default: latest).")


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
    if FLAGS.config is None or FLAGS.workdir is None:
        _fail("both --config=configs/<name>.py and --workdir=DIR are required.")

    # TensorFlow only feeds data on the host: keep it off the accelerators JAX uses.
    import tensorflow as tf  # noqa: PLC0415
    tf.config.set_visible_devices([], "GPU")

    import jax  # noqa: PLC0415

    from alexnet_jax import train  # noqa: PLC0415
    from alexnet_jax.errors import UserError  # noqa: PLC0415

    logging.info("JAX %s: %d process(es), devices %s", jax.__version__, jax.process_count(),
                 jax.devices())
    try:
        if FLAGS.mode == "train":
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        else:
            train.evaluate_workdir(FLAGS.config, FLAGS.workdir, FLAGS.step)
    except UserError as error:
        _fail(str(error))


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
