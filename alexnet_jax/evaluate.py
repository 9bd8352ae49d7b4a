"""Top-1 / top-5 error over a whole evaluation split (every image exactly once)."""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from alexnet_jax.data import catalog, feeding
from alexnet_jax.data.augmentation import Preprocessing
from alexnet_jax.progress import progress_bar


def evaluate(eval_step: Callable, params, source, prep: Preprocessing,
             global_batch: int, mesh: Mesh, views: int = 1) -> dict[str, float]:
    """{"top1_error", "top5_error", "loss", "count", "crops"} on the source's evaluation split.

    views=1 is the centre crop; views=10 averages the softmax over the paper's 10 patches.
    """
    totals = None
    description = f"evaluating {source.eval_split} ({'centre crop' if views == 1 else f'{views} views'})"
    with progress_bar(source.num_examples(source.eval_split), description, "img",
                      enabled=jax.process_index() == 0) as bar:
        shard = feeding.Shard.for_mesh(mesh)
        for batch in feeding.to_device(
                catalog.eval_batches(source, prep, global_batch, views, shard), mesh):
            sums = eval_step(params, batch["images"], batch["labels"], batch["mask"])
            totals = sums if totals is None else jax.tree.map(lambda a, b: a + b, totals, sums)
            bar.update(min(global_batch, bar.total - bar.n))
    totals = {key: float(np.asarray(value)) for key, value in jax.device_get(totals).items()}
    count = totals["count"]
    return {"top1_error": 1.0 - totals["top1_correct"] / count,
            "top5_error": 1.0 - totals["top5_correct"] / count,
            "loss": totals["loss"] / count, "count": int(round(count)), "crops": views}
