"""The TensorFlow-free reader's batches (prepared_folder.py): a run's training batches (the
epoch's order by Grain's index shuffle, each square's crop window and draws, made a whole batch
at a time straight into its arrays), in worker processes (batch_pool.py) or threads of the
training process; each evaluation example and the squares the statistics need, as Grain
MapDataset transforms.

The makers are small frozen dataclasses holding the folder, so they can be sent to spawned
workers (a worker opens the folder's files itself).
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import functools
import os
import threading
from typing import Any, Iterator

import numpy as np

from alexnet_jax.data import augmentation, batch_pool
from alexnet_jax.data.feeding import Shard, epoch_seed

# per worker: batches decoded ahead of the one the devices take (a 224-pixel batch of 128 is
# 19 MB; Grain's default of 500 elements would hold gigabytes)
BATCHES_AHEAD = 2


def host_cores() -> int:
    """The cores this process may use (a cluster's allocation), not every core of the host;
    all of them where the platform cannot say (macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def grain_module():
    """Grain, its absl flags marked parsed when no absl app parsed them (tests, notebooks)."""
    from absl import flags  # noqa: PLC0415

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    import grain  # noqa: PLC0415

    return grain


@dataclasses.dataclass(frozen=True)
class TrainingBatches:
    """Step -> this process's part of one global training batch: the epoch's order (Grain's
    index shuffle), each square's crop window (unmirrored: the devices mirror it), offsets,
    flip and lighting coefficients. The draws are made for the whole global batch from (the
    epoch's seed, the batch) and each process takes its part, so the parts of several
    processes are the one-process batch. Sent to the reading workers (batch_pool.py)."""

    folder: Any
    seed: int
    global_batch: int
    shard: Shard
    steps_per_epoch: int
    crop: int
    random_crop: bool
    random_flip: bool
    lighting_strength: float

    @property
    def local(self) -> int:
        return self.global_batch // self.shard.count

    def fields(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """The arrays of a batch: shape and dtype."""
        b, c = self.local, self.crop
        return {"pixels": ((b, c, c, 3), np.dtype(np.uint8)),
                "offsets": ((b, 2), np.dtype(np.int32)), "flips": ((b,), np.dtype(bool)),
                "alphas": ((b, 3), np.dtype(np.float32)), "labels": ((b,), np.dtype(np.int32))}

    def fill(self, step: int, arrays: dict[str, np.ndarray]) -> None:
        """Write batch `step` of the run into `arrays` (fields()' shapes)."""
        epoch, batch = divmod(int(step), self.steps_per_epoch)
        key = epoch_seed(self.seed, epoch, 0)
        order = _epoch_order(self.folder.num_examples("train"), key)
        mine = slice(self.shard.index * self.local, (self.shard.index + 1) * self.local)
        rng = np.random.default_rng([key, batch])   # one generator a batch: 0.04 CPU-ms
        size = self.folder.prepared_size             # an image less than one an image
        corners = (rng.integers(0, size - self.crop + 1, (self.global_batch, 2))
                   if self.random_crop else
                   np.full((self.global_batch, 2), (size - self.crop) // 2))[mine]
        flips = (rng.random(self.global_batch) < 0.5 if self.random_flip
                 else np.zeros(self.global_batch, bool))[mine]
        alphas = rng.normal(0.0, 1.0, (self.global_batch, 3)).astype(np.float32)[mine]
        arrays["offsets"][:] = corners
        arrays["flips"][:] = flips
        arrays["alphas"][:] = alphas * np.float32(self.lighting_strength)
        first = batch * self.global_batch + mine.start
        for row in range(self.local):
            top, left = corners[row]
            arrays["labels"][row] = window_into(self.folder, "train", int(order[first + row]),
                                                int(top), int(left), arrays["pixels"][row])


_scratch = threading.local()   # each reading thread's decoded square


def window_into(folder: Any, split: str, index: int, top: int, left: int,
                out: np.ndarray) -> int:
    """Write the window at (top, left), out's size, of the square of `folder`'s record
    `index` into `out`; its label. A JPEG is decoded into this thread's scratch square: a new
    one for every image cost 1.26x the CPU in a worker process, the allocator handing each back
    to the kernel and faulting it in again (docs/performance.md)."""
    size = folder.prepared_size
    if getattr(_scratch, "square", None) is None or _scratch.square.size < 2 * size * size * 3:
        _scratch.square = np.empty(2 * size * size * 3, np.uint8)  # room to name a wrong size
    square, label = folder.example(split, index, _scratch.square)
    out[...] = square[top:top + out.shape[0], left:left + out.shape[1]]
    return label


@functools.lru_cache(maxsize=4)
def _epoch_order(count: int, key: int):
    """An epoch's permutation of `count` images (Grain's index shuffle: any position in O(1),
    nothing materialised), cached for the epochs in use (thread-safe: the reader's threads of
    two epochs may ask at once)."""
    return grain_module().MapDataset.range(count).shuffle(seed=key)


@dataclasses.dataclass(frozen=True)
class EvaluationViews:
    """Local slot -> one evaluation example of this process's part: the centre crop or the 10
    views of the stored square, padded with mask 0 past the process's images."""

    folder: Any
    split: str
    mine: tuple[int, int]      # this process's range of the split's images
    crop: int
    views: int

    def __call__(self, slot: int) -> dict[str, np.ndarray]:
        first, last = self.mine
        if first + slot >= last:
            return {"pixels": np.zeros((self.views, self.crop, self.crop, 3), np.uint8),
                    "labels": np.asarray(0, np.int32), "mask": np.asarray(0.0, np.float32)}
        square, label = self.folder.example(self.split, first + int(slot))
        return {"pixels": augmentation.crop_views(square, self.crop, self.views),
                "labels": np.asarray(label, np.int32), "mask": np.asarray(1.0, np.float32)}


@dataclasses.dataclass(frozen=True)
class Square:
    """Index -> the training square (the statistics' input)."""

    folder: Any

    def __call__(self, index: int) -> np.ndarray:
        return self.folder.example("train", int(index))[0]


class RunStream:
    """One stream of training batches for a run, from a step on: epochs follow each other
    without a new stream (and its workers' start). With `folder.workers`, worker processes
    make the batches into shared memory (batch_pool.py); without, threads of this process
    make them (simplejpeg decodes outside the GIL)."""

    def __init__(self, folder: Any, batches: TrainingBatches, first_step: int):
        self.batches, self.next_step = batches, first_step
        if folder.workers:
            self._workers = batch_pool.WorkerBatches(batches, folder.workers, first_step,
                                                     BATCHES_AHEAD)
            self._next = self._workers.next
        else:
            self._workers = None
            self._threads = concurrent.futures.ThreadPoolExecutor(host_cores(),
                                                                  "prepared-reader")
            self._pending: collections.deque = collections.deque()
            self._next = self._next_from_threads

    def take(self, count: int) -> Iterator[dict[str, np.ndarray]]:
        for _ in range(count):
            batch = self._next()
            self.next_step += 1
            yield batch

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()
        else:
            for future in self._pending:
                future.cancel()
            self._threads.shutdown(wait=True)

    def _next_from_threads(self) -> dict[str, np.ndarray]:
        ahead = max(BATCHES_AHEAD, host_cores())   # one batch a thread, at least
        while len(self._pending) < ahead:
            self._pending.append(self._threads.submit(
                self._made, self.next_step + len(self._pending)))
        batch = self._pending.popleft().result()
        self._pending.append(self._threads.submit(
            self._made, self.next_step + len(self._pending) + 1))
        return batch

    def _made(self, step: int) -> dict[str, np.ndarray]:
        arrays = {name: np.empty(shape, dtype)
                  for name, (shape, dtype) in self.batches.fields().items()}
        self.batches.fill(step, arrays)
        return arrays
