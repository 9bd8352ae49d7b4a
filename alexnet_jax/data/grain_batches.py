"""The Grain pipelines of the TensorFlow-free reader (prepared_folder.py): each training
example of a run (the epoch's order by Grain's index shuffle, the square's crop window and its
draws), each evaluation example, and the squares the statistics need, as MapDataset transforms;
and the run's one stream of training batches, in worker processes that die with the trainer.

The transforms are small frozen dataclasses holding the folder, so Grain can send them to its
spawned workers (a worker opens the folder's files itself).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Iterator

import numpy as np

from alexnet_jax.common.child_process import die_with_parent
from alexnet_jax.data import augmentation
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
class TrainingCrop:
    """Local slot -> one training example of this process's part of the run's batches: the
    epoch's order (Grain's index shuffle), the square, its crop window (unmirrored: the devices
    mirror it), offsets, flip and lighting coefficients drawn from (the epoch's seed, the
    image's position in the epoch)."""

    folder: Any
    seed: int
    global_batch: int
    shard: Shard
    steps_per_epoch: int
    crop: int
    random_crop: bool
    random_flip: bool
    lighting_strength: float

    def __call__(self, slot: int) -> dict[str, np.ndarray]:
        local = self.global_batch // self.shard.count
        step, within = divmod(int(slot), local)
        epoch, batch = divmod(step, self.steps_per_epoch)
        position = batch * self.global_batch + self.shard.index * local + within
        key = epoch_seed(self.seed, epoch, 0)
        index = int(_epoch_order(self.folder.num_examples("train"), key)[position])
        square, label = self.folder.example("train", index)
        rng = np.random.default_rng([key, position])
        size = square.shape[0]
        top, left = (rng.integers(0, size - self.crop + 1, 2) if self.random_crop
                     else ((size - self.crop) // 2,) * 2)
        flip = bool(rng.random() < 0.5) if self.random_flip else False
        alphas = rng.normal(0.0, 1.0, 3).astype(np.float32) * np.float32(self.lighting_strength)
        return {"pixels": square[top:top + self.crop, left:left + self.crop],
                "offsets": np.asarray((top, left), np.int32), "flips": np.asarray(flip),
                "alphas": alphas, "labels": np.asarray(label, np.int32)}


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


def die_with_worker_parent(worker_index: int, worker_count: int, parent: int) -> None:
    """A Grain worker ends when the trainer (process `parent`) does, however it ends (a
    SIGKILL included), also when it ended while the worker was starting."""
    del worker_index, worker_count
    die_with_parent()
    if os.getppid() != parent:  # the parent died before the death signal was set
        os._exit(1)


class RunStream:
    """One iterator of training batches for a run, from (epoch, batch) on: epochs follow each
    other without a new iterator (and its workers' start)."""

    def __init__(self, folder: Any, crop: TrainingCrop, first_step: int):
        grain = grain_module()
        local = crop.global_batch // crop.shard.count
        dataset = grain.MapDataset.range(first_step * local, 1 << 62).map(crop).batch(local)
        # a worker decodes in its own main thread (no reading threads of its own: with one
        # more thread a worker takes ~1.3 cores, and workers on every core oversubscribe them,
        # docs/performance.md); without workers, threads of this process decode
        read = (grain.ReadOptions(num_threads=0, prefetch_buffer_size=0) if folder.workers
                else grain.ReadOptions(num_threads=host_cores(),
                                       prefetch_buffer_size=BATCHES_AHEAD))
        stream = dataset.to_iter_dataset(read)
        if folder.workers:
            stream = stream.mp_prefetch(
                grain.multiprocessing.MultiprocessingOptions(
                    num_workers=folder.workers, per_worker_buffer_size=BATCHES_AHEAD),
                worker_init_fn=functools.partial(die_with_worker_parent,
                                                 parent=os.getpid()))
        self.crop, self.next_step = crop, first_step
        self.iterator = iter(stream)

    def take(self, count: int) -> Iterator[dict[str, np.ndarray]]:
        for _ in range(count):
            batch = next(self.iterator)
            self.next_step += 1
            yield batch

    def close(self) -> None:
        close = getattr(self.iterator, "close", None)
        if close:
            close()
