"""The one door from a config to its data: the source (prepared once at the paper's resolution
when `data.prepared` asks for it) and its batches as NumPy arrays. TensorFlow is imported only
for the tfds sources, so `data.name=synthetic` and `data.name=prepared` (a prepared folder)
run where TensorFlow is not installed."""

from __future__ import annotations

import copy

from typing import Iterator

import ml_collections
import numpy as np

from alexnet_jax.data.feeding import Shard

SOURCE_NAMES = ("imagenet2012", "imagenette", "cifar10", "folder", "synthetic", "prepared")


def open_dataset(config: ml_collections.ConfigDict, preparing: bool = False):
    """The source of config.data, prepared if needed (UserError says how to get it);
    `preparing` (--mode=prepare or stats): ArrayRecord squares are written and returned as the
    prepared folder that reads them (tf.data cannot)."""
    d = config.data
    # keys a config older than them lacks (a trained workdir's config.json): their defaults
    file_format, read_workers = d.get("file_format", "tfrecord"), d.get("read_workers", -1)
    if d.name == "synthetic":
        from alexnet_jax.data.synthetic import SyntheticSource  # noqa: PLC0415

        return SyntheticSource(d.synthetic_examples, d.num_classes, d.crop_size, config.seed)
    if d.name == "prepared":  # a prepared folder read without TensorFlow
        from alexnet_jax.data.prepared_folder import PreparedFolderSource  # noqa: PLC0415

        return PreparedFolderSource(d.path, d.resize_size, d.stats_sample, read_workers)
    if file_format == "array_record" and not preparing:
        from alexnet_jax.common.errors import UserError  # noqa: PLC0415

        raise UserError(
            "data.file_format=array_record squares are read by the TensorFlow-free reader, "
            "not by tf.data: prepare them with this command and --mode=prepare (it prints the "
            "folder it writes), then train with --config.data.name=prepared "
            "--config.data.path=<that folder>; or train through tf.data with "
            "data.file_format=tfrecord (the default).")
    from alexnet_jax.data import prepared, sources  # noqa: PLC0415

    source = sources.open_source(d.name, d.path, d.data_dir)
    if d.prepared == "none":
        return source
    source = prepared.prepare(source, int(d.prepared), d.prepared_format, d.prepared_quality,
                              sources.default_data_dir(d.data_dir), file_format)
    if file_format == "array_record":
        from alexnet_jax.data.prepared_folder import PreparedFolderSource  # noqa: PLC0415

        return PreparedFolderSource(source.builder.data_dir, d.resize_size, d.stats_sample,
                                    read_workers)
    return source


def train_batches(source, prep, config: ml_collections.ConfigDict, epoch: int,
                  start_batch: int, shard: Shard) -> Iterator[dict[str, np.ndarray]]:
    """This process's part (`shard`: Shard.for_mesh) of the training batches of one epoch,
    from batch `start_batch` on."""
    if hasattr(source, "train_batches"):
        return source.train_batches(prep, config.train.batch_size, config.seed, epoch,
                                    start_batch, shard)
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from alexnet_jax.data import pipeline  # noqa: PLC0415

    return tfds.as_numpy(pipeline.train_dataset(
        source, prep, config.train.batch_size, config.seed, epoch, start_batch,
        config.data.shuffle_buffer, shard=shard,
        process_sharding=config.data.process_sharding))


def with_eval_split(source, split: str):
    """The source with `split` ("train" or "val") as the split evaluations read: the training
    images evaluated like the validation ones (no augmentation), the measure of fit."""
    if split == "val":
        return source
    twin = copy.copy(source)  # shares the open files and readers; only the split differs
    twin.eval_split = source.train_split
    return twin


def eval_batches(source, prep, global_batch: int, views: int, shard: Shard
                 ) -> Iterator[dict[str, np.ndarray]]:
    """This process's part of the evaluation batches: every image once over the parts,
    padded with mask 0."""
    if hasattr(source, "eval_batches"):
        return source.eval_batches(prep, global_batch, views, shard)
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from alexnet_jax.data import pipeline  # noqa: PLC0415

    return tfds.as_numpy(pipeline.eval_dataset(source, prep, global_batch, views, shard))
