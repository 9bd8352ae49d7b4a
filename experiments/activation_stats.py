"""Per-layer activation statistics of a network on one batch of validation images.

Shows whether a run's ReLUs are alive and how much its logits depend on the image: for each
hidden layer, the pre-activation mean and standard deviation and the fraction of units above
zero; then the standard deviation of each logit across the batch (the input-dependent part,
averaged over classes) and the spread of the per-class mean logits (the input-independent
part). Without --params it describes the config's fresh initialisation.

Run (the diagnosis of the Imagenette runs in docs/results/imagenette_runs.md; the config's overrides must
be those of the run whose checkpoint is read, here the paper's biases of 1):
    python experiments/activation_stats.py --config=configs/imagenette.py \\
        --config.data.path=../shared/data/imagenette2-224 --config.model.positive_bias=1.0
    python experiments/activation_stats.py --config=configs/imagenette.py \\
        --config.data.path=../shared/data/imagenette2-224 --config.model.positive_bias=1.0 \\
        --params=runs/imagenette/checkpoints/250/params
    python experiments/activation_stats.py --config=configs/imagenette.py \\
        --config.data.path=../shared/data/imagenette2-224          # the default biases, 0.1
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from alexnet_jax.data import pipeline, sources  # noqa: E402
from alexnet_jax.model import build, layers  # noqa: E402
from alexnet_jax.training.checkpoints.checkpointing import load_params  # noqa: E402

config_flags.DEFINE_config_file("config", None, "Config file (configs/*.py).")
flags.DEFINE_string("params", None, "<workdir>/checkpoints/<step>/params (default: fresh init).")
flags.DEFINE_integer("batch", 32, "Validation images in the batch.")
FLAGS = flags.FLAGS


def recording_activations(rows: list):
    """A stand-in for layers.activation_fn that appends each layer's statistics to `rows`
    (in call order, i.e. layer order) while computing the same activation."""
    real = layers.activation_fn

    def activation_fn(name: str):
        act = real(name)

        def recorded(x):
            y = act(x)
            jax.debug.callback(lambda *s: rows.append(tuple(float(v) for v in s)),
                               x.mean(), x.std(), (y > 0).mean())
            return y
        return recorded
    return activation_fn


def main(_):
    logging.set_verbosity(logging.WARNING)
    config = FLAGS.config
    source = sources.open_source(config.data.name, config.data.path, config.data.data_dir)
    prep = pipeline.preprocessing_from_config(config, source, progress=False)
    batch = next(pipeline.eval_dataset(source, prep, FLAGS.batch, views=1).as_numpy_iterator())
    images = batch["images"][:, 0]

    rows: list[tuple[float, float, float]] = []
    layers.activation_fn = recording_activations(rows)  # the model looks it up when traced
    mesh = build.build_mesh(config)
    if FLAGS.params:
        model = build.model_with_params(config, source.num_classes, load_params(FLAGS.params),
                                        mesh)
    else:
        model = build.build_model(config, source.num_classes, mesh)
    logits = np.asarray(model(images))
    jax.effects_barrier()

    print(f"{FLAGS.params or 'initialisation'}  ({config.model.arch}, positive_bias "
          f"{config.model.positive_bias}, {len(images)} images)")
    print(f"{'hidden layer':>12} {'pre-act mean':>13} {'pre-act std':>12} {'active':>7}")
    for index, (mean, std, active) in enumerate(rows, 1):
        print(f"{index:>12} {mean:>+13.3f} {std:>12.3f} {active:>7.3f}")
    print(f"logit std across images (mean over classes): {logits.std(0).mean():.4f}")
    print(f"spread of per-class mean logits (std):        {logits.mean(0).std():.4f}")


if __name__ == "__main__":
    flags.mark_flag_as_required("config")
    app.run(main)
