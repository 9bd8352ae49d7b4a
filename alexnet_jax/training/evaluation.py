"""Top-1 / top-5 error over a whole evaluation split (every image exactly once): during a run,
and for --mode=eval on a workdir's checkpoint."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.progress import progress_bar
from alexnet_jax.common.run_files import read_records, surviving_records
from alexnet_jax.common.sharding import DATA_AXIS
from alexnet_jax.data import augmentation, catalog, feeding
from alexnet_jax.data.augmentation import Preprocessing
from alexnet_jax.model import build
from alexnet_jax.training import steps
from alexnet_jax.training.checkpoints import checkpointing
from alexnet_jax.training.records.run_log import log_evaluation, views_text
from alexnet_jax.training.run import setup_run


def evaluate(eval_step: Callable, params, source, prep: Preprocessing,
             global_batch: int, mesh: Mesh, views: int = 1) -> dict[str, float]:
    """{"top1_error", "top5_error", "loss", "count", "crops"} on the source's evaluation split.

    views=1 is the centre crop; views=10 averages the softmax over the paper's 10 patches.
    """
    totals, mean_views = None, None
    description = f"evaluating {source.eval_split} ({views_text(views)})"
    with progress_bar(source.num_examples(source.eval_split), description, "img",
                      enabled=jax.process_index() == 0) as bar:
        shard = feeding.Shard.for_mesh(mesh)
        images = images_per_step(global_batch, views, mesh.shape[DATA_AXIS])
        # no batch waits on the devices: the host prepares the next one meanwhile
        for batch in feeding.to_device(
                catalog.eval_batches(source, prep, images, views, shard), mesh, prefetch=0):
            if "pixels" in batch and mean_views is None:
                # uint8 views of prepared squares: the devices subtract the mean's windows
                mean_views = jax.device_put(augmentation.mean_views(prep, views),
                                            NamedSharding(mesh, P()))
            inputs = batch["pixels"] if "pixels" in batch else batch["images"]
            sums = eval_step(params, inputs, batch["labels"], batch["mask"],
                             mean_views if "pixels" in batch else None)
            # at most two steps in flight: each holds its batch (10 views: 10 times a centre
            # crop's), and a host faster than the devices would otherwise queue many
            jax.block_until_ready(totals)
            totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
            bar.update(min(images, bar.total - bar.n))
            del batch, inputs  # not held while the next batch is made and sent
    totals = {key: float(np.asarray(value)) for key, value in jax.device_get(totals).items()}
    count = totals["count"]
    return {"top1_error": 1.0 - totals["top1_correct"] / count,
            "top5_error": 1.0 - totals["top5_correct"] / count,
            "loss": totals["loss"] / count, "count": int(round(count)), "crops": views}


def images_per_step(global_batch: int, views: int, data_axis: int) -> int:
    """Images an evaluation step takes: the evaluation batch for the centre crop; for V views
    about batch / V, a multiple of the mesh's data axis, so that a step sends and computes as
    many network inputs (and holds as much memory) as the centre crop's."""
    return max(data_axis, (global_batch // views) // data_axis * data_axis)


class Evaluations:
    """A run's evaluations, each made once: (step, views) -> its logged record."""

    def __init__(self, run, steps_per_epoch: int, reuse_logged: bool = False,
                 timed: Callable[[int, float], None] | None = None):
        """`reuse_logged`: evaluations of the resumed step already in metrics.jsonl (made by a
        run killed before it could checkpoint them, e.g. during the final 10-view evaluation)
        count as made: the same parameters, not evaluated and logged twice. `timed(views,
        seconds)` is told how long each evaluation of the validation images took."""
        self.run, self.steps_per_epoch, self.timed = run, steps_per_epoch, timed
        self.eval_step = steps.make_eval_step(run.graphdef, build.compiler_options(run.config))
        self._done: dict[tuple[int, int, str], dict[str, Any]] = {}
        if reuse_logged:
            for record in surviving_records(read_records(run.workdir)):
                if record.get("step") == run.step and record.get("split") in ("val", "train") \
                        and "crops" in record:
                    self._done[run.step, record["crops"], record["split"]] = record

    def get(self, step: int, views: int, split: str = "val") -> dict[str, Any]:
        run = self.run
        if (step, views, split) not in self._done:
            start = time.perf_counter()
            result = evaluate(self.eval_step, run.params,
                              catalog.with_eval_split(run.source, split), run.prep,
                              run.config.train.eval_batch_size, run.mesh, views)
            if self.timed is not None and split == "val":
                self.timed(views, time.perf_counter() - start)
            self._done[step, views, split] = log_evaluation(
                run, step, step / self.steps_per_epoch, result, split)
        return self._done[step, views, split]


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str | Path,
                     step: int | None = None, split: str = "val") -> list[dict[str, Any]]:
    """--mode=eval: the final evaluation views of a workdir's latest (or given) checkpoint,
    appended to its eval_results.jsonl (the training's metrics.jsonl is left untouched).
    split="train" evaluates the training images instead, centre crop only (without
    augmentation or dropout: how well the network fits what it trained on)."""
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
            steps_per_epoch = max(1, feeding.train_steps_per_epoch(
                run.source, run.config.train.batch_size))
            evaluations = Evaluations(run, steps_per_epoch)
            views = (1,) if split == "train" else run.config.train.final_eval_views or (1,)
            return [evaluations.get(run.step, view, split) for view in views]
    finally:
        run.checkpointer.close()
        run.writer.close()
