"""`data.name=synthetic`: random uint8 images and labels made on the host, no files read and no
TensorFlow needed, for timing the real training loop (feeding, logging, checkpoints) where the
data would otherwise be the bottleneck or is not at hand.

A pool of `data.synthetic_examples` random crops is made once (seeded); each epoch visits them
in a seeded random order, with random crop offsets, flips and lighting coefficients, in the
same batch format as prepared data (augmentation.py), so the devices finish them the same way.
Evaluation uses a tenth as many examples. Statistics: the published ImageNet ones.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from alexnet_jax.data.feeding import Shard, epoch_seed
from alexnet_jax.data.published_stats import DatasetStats, published_imagenet_stats


@dataclasses.dataclass
class SyntheticSource:
    """A source of random images with the interface train.py uses of any source."""

    num_train: int
    num_classes_: int
    crop_size: int
    seed: int = 0
    name: str = "synthetic"
    train_split: str = "train"
    eval_split: str = "val"
    prepared_storage: str = "synthetic"
    skipped_images: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        rng = np.random.default_rng([self.seed, 7])
        self._pool = rng.integers(0, 256, (self.num_train, self.crop_size, self.crop_size, 3),
                                  dtype=np.uint8)
        self._labels = rng.integers(0, self.num_classes_, self.num_train).astype(np.int32)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(f"class_{i}" for i in range(self.num_classes_))

    @property
    def num_classes(self) -> int:
        return self.num_classes_

    def num_examples(self, split: str) -> int:
        return self.num_train if split == self.train_split else max(1, self.num_train // 10)

    def dataset_stats(self, resize_size: int) -> DatasetStats:
        return published_imagenet_stats(resize_size, "cuda_convnet2")

    def train_batches(self, prep, global_batch: int, seed: int, epoch: int, start_batch: int,
                      shard: Shard) -> Iterator[dict[str, np.ndarray]]:
        """This process's slice of each global batch of the epoch, from `start_batch` on."""
        rng = np.random.default_rng(epoch_seed(seed, epoch, 0))
        order = rng.permutation(self.num_train)
        count = len(order) // global_batch
        offsets = rng.integers(0, prep.resize_size - self.crop_size + 1, (len(order), 2),
                               dtype=np.int32)
        flips = rng.random(len(order)) < 0.5
        alphas = rng.normal(0.0, 1.0, (len(order), 3)).astype(np.float32)
        alphas *= np.float32(prep.lighting_strength)
        local = global_batch // shard.count
        for batch in range(start_batch, count):
            picked = slice(batch * global_batch + shard.index * local,
                           batch * global_batch + (shard.index + 1) * local)
            indices = order[picked]
            yield {"pixels": self._pool[indices], "offsets": offsets[picked],
                   "flips": flips[picked], "alphas": alphas[picked],
                   "labels": self._labels[indices]}

    def eval_batches(self, prep, global_batch: int, views: int,
                     shard: Shard) -> Iterator[dict[str, np.ndarray]]:
        """Evaluation batches (float images with the mean subtracted, padded with mask 0)."""
        total = self.num_examples(self.eval_split)
        mine = np.array_split(np.arange(total), shard.count)[shard.index]
        local = global_batch // shard.count
        batches = -(-int(np.ceil(total / shard.count)) // local)
        mean = float(np.mean(prep.mean_square()))
        for batch in range(batches):
            indices = mine[batch * local:(batch + 1) * local]
            images = np.zeros((local, views, self.crop_size, self.crop_size, 3), np.float32)
            images[:len(indices)] = self._pool[indices][:, None].astype(np.float32) - mean
            labels = np.zeros(local, np.int32)
            labels[:len(indices)] = self._labels[indices]
            mask = np.zeros(local, np.float32)
            mask[:len(indices)] = 1.0
            yield {"images": images, "labels": labels, "mask": mask}
