"""Feeding the mesh, without TensorFlow: which part of the data each process reads, how many
batches an epoch has, and global batches assembled on the devices (any source's batches)."""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from alexnet_jax.sharding import sharding_for


@dataclasses.dataclass(frozen=True)
class Shard:
    """Which part of the data this process reads: process `index` of `count`."""

    index: int
    count: int

    @classmethod
    def of_this_process(cls) -> "Shard":
        return cls(jax.process_index(), jax.process_count())


def epoch_seed(seed: int, epoch: int, process_index: int) -> int:
    """A 31-bit seed for one process's shuffle and augmentation in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, process_index]).generate_state(1)[0] >> 1)


def train_steps_per_epoch(source, global_batch: int, shard: Shard | None = None) -> int:
    """Full global batches per epoch (every process gets the same number)."""
    shard = shard or Shard.of_this_process()
    per_process = source.num_examples(source.train_split) // shard.count
    return per_process // (global_batch // shard.count)


def eval_batches_per_process(source, global_batch: int,
                             shard: Shard | None = None) -> int:
    """Evaluation batches each process runs: enough for its share, equal on every process."""
    shard = shard or Shard.of_this_process()
    per_process = math.ceil(source.num_examples(source.eval_split) / shard.count)
    return math.ceil(per_process / (global_batch // shard.count))


def to_device(batches: Iterator[dict], mesh: Mesh, prefetch: int = 2
              ) -> Iterator[dict[str, jax.Array]]:
    """Global batches sharded over the mesh's `data` axis, `prefetch` batches ahead.

    Transfers are asynchronous, so the host prepares and sends batch n+1 while the devices run
    batch n.
    """
    sharding = sharding_for(mesh, "batch")
    queue = collections.deque()

    def put(batch):
        queue.append({key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
                      for key, value in batch.items()})

    iterator = iter(batches)
    for batch in iterator:
        put(batch)
        if len(queue) > prefetch:
            yield queue.popleft()
    while queue:
        yield queue.popleft()
