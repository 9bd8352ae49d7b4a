"""The paper's Figure 4 from a trained run: (left) validation images with their five most
probable classes, (right) query images from the validation set and the training images whose
fc7 feature vectors are nearest to theirs in Euclidean distance.

Run:
    python experiments/figure4.py --config=configs/imagenette.py --workdir=runs/imagenette \
        --config.data.path=../shared/data/imagenette2-224
Writes <workdir>/figure4.png (or --output).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from alexnet_jax.common.errors import UserError  # noqa: E402
from alexnet_jax.prediction import predict  # noqa: E402

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "The run's config file.", lock_config=True)
flags.DEFINE_string("workdir", None, "The trained run's workdir.")
flags.DEFINE_integer("shown", 8, "Validation images with their top-5 bars.")
flags.DEFINE_integer("queries", 4, "Query images for the nearest-neighbour rows.")
flags.DEFINE_integer("neighbours", 6, "Training images shown per query.")
flags.DEFINE_integer("train_images", 2000, "Training images searched (0: all).")
flags.DEFINE_integer("stride", 37, "Take every n-th validation image (variety across classes).")
flags.DEFINE_string("output", None, "The PNG to write (default <workdir>/figure4.png).")


def draw(run, shown, queries, neighbours, train_pool, path: Path) -> None:
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    columns = 1 + len(neighbours[0]) if neighbours else 1
    rows = max(len(shown), 2 * len(queries))
    figure = plt.figure(figsize=(4.2 + 1.3 * columns, 1.35 * rows))
    grid = figure.add_gridspec(rows, 3 + columns, width_ratios=[1.2, 1.9, 0.3] + [1] * columns)
    probs = predict.probabilities(run.model, np.stack([s[2] for s in shown])[:, None])
    for row, ((name, label, _, display), p) in enumerate(zip(shown, probs)):
        image_ax = figure.add_subplot(grid[row, 0])
        image_ax.imshow(display)
        image_ax.set_axis_off()
        image_ax.set_title(run.names[label], fontsize=8)
        bars = figure.add_subplot(grid[row, 1])
        top = predict.top_k(p, tuple(range(len(run.names))))
        bars.barh(range(5), [q for _, q in top][::-1],
                  color=["tab:red" if c == label else "tab:blue" for c, _ in top][::-1])
        bars.set_yticks(range(5), [run.names[c] for c, _ in top][::-1], fontsize=7)
        bars.set_xlim(0, 1)
        bars.tick_params(axis="x", labelsize=6)
    for q, ((name, label, _, display), found) in enumerate(zip(queries, neighbours)):
        ax = figure.add_subplot(grid[2 * q:2 * q + 2, 3])
        ax.imshow(display)
        ax.set_axis_off()
        ax.set_title(f"query: {run.names[label]}", fontsize=7)
        for n, index in enumerate(found):
            ax = figure.add_subplot(grid[2 * q:2 * q + 2, 4 + n])
            ax.imshow(train_pool[index][3])
            ax.set_axis_off()
            ax.set_title(run.names[train_pool[index][1]], fontsize=7)
    figure.suptitle(f"{run.source.name}, checkpoint {run.step}: top-5 predictions (red: the "
                    "true class) and the training images nearest in "
                    f"{run.model.FEATURE_LAYER} space", fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def main(argv) -> None:
    del argv
    try:
        run = predict.load_trained(FLAGS.config, FLAGS.workdir)
        validation = list(itertools.islice(predict.split_examples(run, "val"), 0, None,
                                           FLAGS.stride))
        shown = validation[:FLAGS.shown]
        queries = validation[-FLAGS.queries:] if FLAGS.queries else []
        # the training images searched: their vectors, and only a display copy of each
        pool, pool_vectors = [], []
        examples = predict.split_examples(run, "train", FLAGS.train_images)
        for keys, vectors in predict.fc7_batches(
                run, (((name, label, None, display), image)
                      for name, label, image, display in examples)):
            pool += keys
            pool_vectors.append(vectors)
    except UserError as error:
        raise SystemExit(f"error: {error}")
    pool_vectors = np.concatenate(pool_vectors)
    query_vectors = np.concatenate([vectors for _, vectors in predict.fc7_batches(
        run, ((None, q[2]) for q in queries))] or [np.zeros((0, pool_vectors.shape[1]))])
    neighbours = []
    for vector in query_vectors:
        distances = np.linalg.norm(pool_vectors - vector[None], axis=1)
        neighbours.append(list(np.argsort(distances)[:FLAGS.neighbours]))
    path = Path(FLAGS.output or Path(FLAGS.workdir) / "figure4.png")
    draw(run, shown, queries, neighbours, pool, path)
    print(f"wrote {path} ({len(shown)} validation images, {len(queries)} queries against "
          f"{len(pool)} training images)")


if __name__ == "__main__":
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
