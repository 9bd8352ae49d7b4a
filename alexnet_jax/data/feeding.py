"""Feeding the mesh, without TensorFlow: which part of the data each process reads, how many
batches an epoch has, and global batches assembled on the devices (any source's batches)."""

from __future__ import annotations

import collections
import dataclasses
import math
import queue as queue_module
import threading
from typing import Iterator

import jax
import numpy as np
from jax.sharding import Mesh

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.sharding import DATA_AXIS, sharding_for


@dataclasses.dataclass(frozen=True)
class Shard:
    """Which part of every global batch this process feeds: part `index` of `count` equal,
    consecutive parts. A part belongs to the processes whose devices hold the same rows of the
    mesh's `data` axis; processes that share rows (one device per process, the two columns of
    a row on two processes) feed the same part, so they decode the same images."""

    index: int
    count: int

    @classmethod
    def for_mesh(cls, mesh: Mesh, process_index: int | None = None) -> "Shard":
        """This process's part (or `process_index`'s) of the batches `mesh` is fed."""
        me = jax.process_index() if process_index is None else process_index
        axis = mesh.axis_names.index(DATA_AXIS)
        rows: dict[int, set[int]] = collections.defaultdict(set)
        for position, device in np.ndenumerate(mesh.devices):
            rows[device.process_index].add(position[axis])
        parts = sorted({tuple(sorted(held)) for held in rows.values()})
        size = len(parts[0])
        expected = [tuple(range(k * size, (k + 1) * size)) for k in range(len(parts))]
        if parts != expected:  # never from sharding.make_mesh; a hand-made mesh could
            raise UserError(f"the processes hold the mesh's data rows {parts}: each process "
                            "must hold a consecutive block of rows, the same size on every "
                            "process, to feed its part of the batch.")
        return cls(parts.index(tuple(sorted(rows[me]))), len(parts))


def epoch_seed(seed: int, epoch: int, process_index: int) -> int:
    """A 31-bit seed for one process's shuffle and augmentation in one epoch."""
    return int(np.random.SeedSequence([seed, epoch, process_index]).generate_state(1)[0] >> 1)


def train_steps_per_epoch(source, global_batch: int, shard: Shard | None = None) -> int:
    """Full global batches per epoch (every process gets the same number; the same for any
    `shard`, as floor(floor(n / c) / (b / c)) = floor(n / b))."""
    shard = shard or Shard(0, 1)
    per_process = source.num_examples(source.train_split) // shard.count
    return per_process // (global_batch // shard.count)


def eval_batches_per_process(source, global_batch: int,
                             shard: Shard | None = None) -> int:
    """Evaluation batches each process runs: enough for its share, equal on every process."""
    shard = shard or Shard(0, 1)
    per_process = math.ceil(source.num_examples(source.eval_split) / shard.count)
    return math.ceil(per_process / (global_batch // shard.count))


def to_device(batches: Iterator[dict], mesh: Mesh, prefetch: int = 2, thread: bool = False
              ) -> Iterator[dict[str, jax.Array]]:
    """Global batches sharded over the mesh's `data` axis, `prefetch` batches ahead; `batches`
    are this process's part of each (`Shard.for_mesh(mesh)`).

    Transfers are asynchronous, so the host prepares and sends batch n+1 while the devices run
    batch n. With `thread`, the host batches are made and their transfers started in a thread
    of their own, so that this work overlaps the training loop's own host work (dispatching the
    step, fetching metrics) instead of taking turns with it: on an H200 the loop waited for its
    batches half of the time without it (docs/performance.md).
    """
    sharding = sharding_for(mesh, "batch")
    parts = Shard.for_mesh(mesh).count

    def on_devices(batch):
        return {key: jax.make_array_from_process_local_data(
            sharding, np.asarray(value), (len(value) * parts, *np.shape(value)[1:]))
            for key, value in batch.items()}

    if thread:
        yield from _fed_by_thread(batches, on_devices, prefetch)
        return
    queue = collections.deque()
    iterator = iter(batches)
    for batch in iterator:
        queue.append(on_devices(batch))
        del batch  # the host copy is not held while the next batch is made
        if len(queue) > prefetch:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


class _End:
    """The feeding thread's last item: the batches ran out, or `error` was raised making one."""

    def __init__(self, error: BaseException | None = None):
        self.error = error


def _fed_by_thread(batches: Iterator[dict], on_devices, prefetch: int
                   ) -> Iterator[dict[str, jax.Array]]:
    """`on_devices(batch)` of each batch, made by a thread of its own at most `prefetch` + 1
    batches ahead. An error in the thread is raised here. When the consumer stops early (a
    stop, the last step), the thread stops before this generator returns, so nothing reads the
    source's iterator afterwards (a prepared folder's run stream continues into the next epoch
    only from the batch after the last one taken)."""
    ready: queue_module.Queue = queue_module.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()

    def offer(item) -> bool:
        """Put `item` when there is room; False if the consumer stopped meanwhile."""
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue_module.Full:
                continue
        return False

    def feed() -> None:
        iterator = iter(batches)
        try:
            # stop is looked at before each batch is asked of the source, not after: a put
            # that the consumer's closing drain lets through must not make one batch more
            while not stop.is_set():
                batch = next(iterator, _End)
                if batch is _End or not offer(on_devices(batch)):
                    break
                del batch  # the host copy is not held while the next batch is made
            offer(_End())
        except BaseException as error:  # noqa: BLE001 - every error reaches the consumer
            offer(_End(error))
        finally:
            close = getattr(iterator, "close", None)
            if close:
                close()

    worker = threading.Thread(target=feed, name="feed-devices", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if isinstance(item, _End):
                if item.error is not None:
                    raise item.error
                return
            yield item
            del item
    finally:
        stop.set()
        while worker.is_alive():  # make room for a put in progress, then wait for the thread
            try:
                ready.get_nowait()
            except queue_module.Empty:
                pass
            worker.join(timeout=0.05)
