"""tf.data pipelines: per-process shards of a source, augmented on the host, fed to the mesh.

Training batches are a pure function of (seed, epoch, position in the epoch): the order comes
from seeded file and buffer shuffles, and each example's augmentation from a stateless seed made
of the epoch seed and its index, so a run resumed at any step sees the same batches.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from typing import Iterator

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from jax.sharding import Mesh

from alexnet_jax.data import preprocess
from alexnet_jax.data import stats as stats_lib
from alexnet_jax.data.sources import Source
from alexnet_jax.sharding import sharding_for

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Everything the host does to an image; see PAPER.md section 3."""

    resize_size: int = 256            # shorter side -> this, then the central square
    crop_size: int = 224              # network input
    random_crop: bool = True
    random_flip: bool = True
    lighting_strength: float = 0.0    # std of the PCA lighting coefficients; 0 = off
    eigenvectors: np.ndarray | None = None       # (3, 3), columns
    component_scales: np.ndarray | None = None   # (3,), 0-255 scale
    mean: np.ndarray | None = None    # (resize, resize, 3) mean image, (3,) channel mean, or None
    stats_sample_size: int = 0        # training images the mean and PCA came from (0: published)

    def square(self, image_bytes: tf.Tensor) -> tf.Tensor:
        """Decoded, resized, centre-squared, mean-subtracted float32 image."""
        image = preprocess.paper_square(preprocess.decode(image_bytes), self.resize_size)
        if self.mean is not None:
            image = image - tf.constant(self.mean, tf.float32)
        return image

    def train_view(self, image_bytes: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        """One augmented training image (crop, flip and PCA lighting)."""
        image, alphas = self.train_view_and_lighting(image_bytes, seed)
        return self.add_lighting(image, alphas)

    def train_view_and_lighting(self, image_bytes: tf.Tensor, seed: tf.Tensor
                                ) -> tuple[tf.Tensor, tf.Tensor]:
        """The cropped, flipped image and its PCA lighting coefficients a_i, not yet added
        (the pipeline adds them to a whole batch at once: one op instead of one per image)."""
        crop_seed, light_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        image = preprocess.random_crop_and_flip(self.square(image_bytes), self.crop_size,
                                                crop_seed, self.random_crop, self.random_flip)
        alphas = preprocess.lighting_coefficients(light_seed, self.lighting_strength)
        return image, alphas

    def add_lighting(self, images: tf.Tensor, alphas: tf.Tensor) -> tf.Tensor:
        """Images (..., H, W, 3) plus their colour shifts, alphas (..., 3)."""
        if self.lighting_strength <= 0:
            return images
        return images + preprocess.lighting_offsets(alphas, self.eigenvectors,
                                                    self.component_scales)

    def eval_views(self, image_bytes: tf.Tensor, views: int) -> tf.Tensor:
        """(views, crop, crop, 3): the centre crop (views=1) or the paper's 10 views."""
        square = self.square(image_bytes)
        if views == 1:
            return preprocess.central_crop(square, self.crop_size)[None]
        if views == 10:
            return preprocess.ten_views(square, self.crop_size)
        raise ValueError(f"evaluation views must be 1 or 10, got {views}")


def preprocessing_from_config(config: ml_collections.ConfigDict, source: Source,
                              progress: bool = True) -> Preprocessing:
    """The host-side preprocessing of config.data; computes the dataset statistics it needs
    on first use (cached beside the prepared data)."""
    d = config.data
    stats = None
    if d.mean != "none" or d.lighting != "none":
        if d.stats_source == "dataset":
            stats = stats_lib.dataset_stats(source, d.resize_size, d.stats_sample, progress)
        else:
            mode = d.lighting if d.lighting != "none" else "cuda_convnet2"
            stats = stats_lib.published_imagenet_stats(d.resize_size, mode)
    mean = {"image": stats.mean_image if stats else None,
            "channel": stats.channel_mean if stats else None, "none": None}[d.mean]
    lighting = d.lighting != "none" and d.lighting_strength > 0
    return Preprocessing(
        resize_size=d.resize_size, crop_size=d.crop_size, random_crop=d.random_crop,
        random_flip=d.random_flip, mean=None if mean is None else np.asarray(mean, np.float32),
        lighting_strength=d.lighting_strength if lighting else 0.0,
        eigenvectors=stats.eigenvectors.astype(np.float32) if lighting else None,
        component_scales=stats.lighting_scales(d.lighting).astype(np.float32)
        if lighting else None, stats_sample_size=stats.sample_size if stats else 0)


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


def _read_options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def train_steps_per_epoch(source: Source, global_batch: int, shard: Shard | None = None) -> int:
    """Full global batches per epoch (every process gets the same number)."""
    shard = shard or Shard.of_this_process()
    per_process = source.num_examples(source.train_split) // shard.count
    return per_process // (global_batch // shard.count)


def train_dataset(source: Source, prep: Preprocessing, global_batch: int, seed: int, epoch: int,
                  start_batch: int = 0, shuffle_buffer: int = 10_000,
                  shard: Shard | None = None,
                  process_sharding: str = "interleaved") -> tf.data.Dataset:
    """This process's augmented training batches of one epoch, from batch `start_batch` on.

    Yields {"images": float32 (b, crop, crop, 3), "labels": int32 (b,)} with
    b = global_batch / process count.
    process_sharding `interleaved`: every process scans the same shuffled order and decodes only
    its slice of each global batch, so the global batches are the same for any process count.
    `split`: each process reads only its own 1/count of the files (tfds.split_for_jax_process).
    """
    shard = shard or Shard.of_this_process()
    local_batch = global_batch // shard.count
    interleaved = process_sharding == "interleaved"
    epoch_key = epoch_seed(seed, epoch, 0 if interleaved else shard.index)
    split = source.train_split
    if not interleaved:
        split = tfds.split_for_jax_process(split, process_index=shard.index,
                                           process_count=shard.count, drop_remainder=True)
    read_config = tfds.ReadConfig(shuffle_seed=epoch_key, options=_read_options(),
                                  try_autocache=False)
    ds = source.builder.as_dataset(split=split, shuffle_files=True, read_config=read_config,
                                   decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.shuffle(shuffle_buffer, seed=epoch_key, reshuffle_each_iteration=False)
    ds = ds.enumerate()
    if interleaved:
        # Whole global batches only, then this process's slice of each (before decoding).
        ds = ds.take(train_steps_per_epoch(source, global_batch, shard) * global_batch)
        ds = ds.skip(start_batch * global_batch)
        ds = ds.filter(lambda index, _: (index % global_batch) // local_batch == shard.index)
    else:
        ds = ds.skip(start_batch * local_batch)  # skip before decoding: cheap

    def augment(index, example):
        example_seed = tf.stack([tf.constant(epoch_key, tf.int64), index])
        image, alphas = prep.train_view_and_lighting(example["image"], example_seed)
        return {"images": image, "alphas": alphas,
                "labels": tf.cast(example["label"], tf.int32)}

    def light_batch(batch):
        return {"images": prep.add_lighting(batch["images"], batch["alphas"]),
                "labels": batch["labels"]}

    ds = ds.map(augment, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True)
    return ds.map(light_batch, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def eval_batches_per_process(source: Source, global_batch: int,
                             shard: Shard | None = None) -> int:
    """Evaluation batches each process runs: enough for its share, equal on every process."""
    shard = shard or Shard.of_this_process()
    per_process = math.ceil(source.num_examples(source.eval_split) / shard.count)
    return math.ceil(per_process / (global_batch // shard.count))


def eval_dataset(source: Source, prep: Preprocessing, global_batch: int, views: int,
                 shard: Shard | None = None) -> tf.data.Dataset:
    """This process's share of the evaluation split, every image exactly once.

    Yields {"images": (b, views, crop, crop, 3), "labels": (b,), "mask": (b,)}; the last batches
    are padded with mask 0 so that every process runs the same number of steps.
    """
    shard = shard or Shard.of_this_process()
    local_batch = global_batch // shard.count
    split = tfds.even_splits(source.eval_split, n=shard.count)[shard.index]
    ds = source.builder.as_dataset(split=split, shuffle_files=False,
                                   read_config=tfds.ReadConfig(options=_read_options()),
                                   decoders={"image": tfds.decode.SkipDecoding()})
    ds = ds.map(lambda ex: {"images": prep.eval_views(ex["image"], views),
                            "labels": tf.cast(ex["label"], tf.int32),
                            "mask": tf.constant(1.0, tf.float32)},
                num_parallel_calls=AUTOTUNE, deterministic=True)
    total = eval_batches_per_process(source, global_batch, shard) * local_batch
    padding = total - int(source.builder.info.splits[split].num_examples)
    crop = prep.crop_size
    blank = {"images": tf.zeros([views, crop, crop, 3]), "labels": tf.constant(0, tf.int32),
             "mask": tf.constant(0.0, tf.float32)}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))
    return ds.batch(local_batch, drop_remainder=True).prefetch(AUTOTUNE)


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
