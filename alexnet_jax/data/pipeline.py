"""tf.data pipelines: per-process shards of a source, augmented on the host, fed to the mesh.

Training batches are a pure function of (seed, epoch, position in the epoch): the order comes
from seeded file and buffer shuffles, and each example's augmentation from a stateless seed made
of the epoch seed and its index, so a run resumed at any step sees the same batches.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_datasets as tfds

from alexnet_jax.data.augmentation import (  # noqa: F401
    Preprocessing,
    eval_pixels,
    preprocessing_from_config,
)
from alexnet_jax.data.feeding import (  # noqa: F401 - re-exported
    Shard,
    epoch_seed,
    eval_batches_per_process,
    to_device,
    train_steps_per_epoch,
)
from alexnet_jax.data.sources import Source

AUTOTUNE = tf.data.AUTOTUNE


def _read_options() -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = True
    return options


def _decoders(source: Source) -> dict | None:
    """Encoded images stay bytes until the pipeline decodes them (only the crop window of a
    prepared JPEG); raw prepared pixels are plain uint8 tensors."""
    return None if source.prepared_storage == "raw" else {"image": tfds.decode.SkipDecoding()}


def train_dataset(source: Source, prep: Preprocessing, global_batch: int, seed: int, epoch: int,
                  start_batch: int = 0, shuffle_buffer: int = 10_000,
                  shard: Shard | None = None,
                  process_sharding: str = "interleaved") -> tf.data.Dataset:
    """This process's augmented training batches of one epoch, from batch `start_batch` on.

    Yields {"images": float32 (b, crop, crop, 3), "labels": int32 (b,)} with
    b = global_batch / shard.count; from prepared squares instead {"pixels": uint8 (b, crop,
    crop, 3), "offsets": int32 (b, 2), "flips": bool (b,), "alphas": float32 (b, 3), "labels"},
    finished on the devices (device_augment.py).
    process_sharding `interleaved`: every process scans the same shuffled order and decodes only
    its part of each global batch, so the global batches are the same for any process count.
    `split`: each part reads only its own 1/count of the files (tfds.split_for_jax_process).
    """
    shard = shard or Shard(0, 1)
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
                                   decoders=_decoders(source))
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
        labels = tf.cast(example["label"], tf.int32)
        if source.prepared_storage:
            return {**prep.prepared_train_view(example["image"], example_seed), "labels": labels}
        image, alphas = prep.train_view_and_lighting(example["image"], example_seed)
        return {"images": image, "alphas": alphas, "labels": labels}

    def light_batch(batch):
        return {"images": prep.add_lighting(batch["images"], batch["alphas"]),
                "labels": batch["labels"]}

    ds = ds.map(augment, num_parallel_calls=AUTOTUNE, deterministic=True)
    ds = ds.batch(local_batch, drop_remainder=True)
    if source.prepared_storage:  # mean and lighting are added on the devices
        return ds.prefetch(AUTOTUNE)
    return ds.map(light_batch, num_parallel_calls=AUTOTUNE, deterministic=True).prefetch(AUTOTUNE)


def eval_dataset(source: Source, prep: Preprocessing, global_batch: int, views: int,
                 shard: Shard | None = None) -> tf.data.Dataset:
    """This process's share of the evaluation split, every image exactly once.

    Yields {"images": float32 (b, views, crop, crop, 3), "labels": (b,), "mask": (b,)}; from
    prepared squares instead "pixels": uint8 views without the mean, which the devices subtract
    (a quarter of the bytes to hold and send). The last batches are padded with mask 0 so that
    every process runs the same number of steps.
    """
    shard = shard or Shard(0, 1)
    local_batch = global_batch // shard.count
    split = tfds.even_splits(source.eval_split, n=shard.count)[shard.index]
    ds = source.builder.as_dataset(split=split, shuffle_files=False,
                                   read_config=tfds.ReadConfig(options=_read_options()),
                                   decoders=_decoders(source))
    key, dtype = ("pixels", tf.uint8) if source.prepared_storage else ("images", tf.float32)
    view = (lambda image: eval_pixels(prep, image, views)) if source.prepared_storage else (
        lambda image: prep.eval_views(image, views))
    ds = ds.map(lambda ex: {key: view(ex["image"]),
                            "labels": tf.cast(ex["label"], tf.int32),
                            "mask": tf.constant(1.0, tf.float32)},
                num_parallel_calls=AUTOTUNE, deterministic=True)
    total = eval_batches_per_process(source, global_batch, shard) * local_batch
    padding = total - int(source.builder.info.splits[split].num_examples)
    crop = prep.crop_size
    blank = {key: tf.zeros([views, crop, crop, 3], dtype), "labels": tf.constant(0, tf.int32),
             "mask": tf.constant(0.0, tf.float32)}
    ds = ds.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))
    # no batch made ahead (a batch of 10 views is 10 times a training one): the devices work
    # on the previous batches, dispatched asynchronously, while the host makes the next one
    return ds.batch(local_batch, drop_remainder=True)
