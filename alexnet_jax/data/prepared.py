"""The paper's once-only down-sampling (PAPER.md section 3): every image of a source, resized to
the shorter side S and centre-cropped to S x S, written once as tfds records.

"We down-sampled the images to a fixed resolution of 256 x 256" - so decoding and resizing a
large camera JPEG, the costliest work of the host, is done once instead of every epoch. Each
split of the source is written by its own tfds builder (`alexnet_prepared`, in the source's
`data_dir`), whose config name carries a fingerprint of the source and of the settings (size,
storage, quality, PREPARED_VERSION): a changed source or setting is prepared again.

Files (`data.file_format`): TFRecord, which tf.data reads (the training pipeline of every tfds
source), or ArrayRecord, which tensorflow-datasets' data source reads without TensorFlow
(`data.name=prepared`, prepared_folder.py).

Storage (`data.prepared_format`): `jpeg` (4:2:0 colour) or `jpeg444` (full colour) at
`data.prepared_quality`, or `raw` uint8 pixels (exact to rounding, 192 KiB an image at 256);
docs/performance.md gives the measurements that chose the default.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from alexnet_jax.common.disk import format_bytes, free_bytes
from alexnet_jax.common.errors import UserError
from alexnet_jax.common.progress import progress_bar
from alexnet_jax.data import preparation, preprocess
from alexnet_jax.data.sources import Source

PREPARED_VERSION = "1.1.0"  # 1.1: raw pixels stored as bytes (1.0: 2x larger)
FORMATS = ("jpeg", "jpeg444", "raw")


def square_uint8(image_bytes: tf.Tensor, size: int) -> tf.Tensor:
    """The paper's square of one encoded image, rounded to uint8 (what is stored)."""
    square = preprocess.paper_square(preprocess.decode(image_bytes), size)
    return tf.cast(tf.clip_by_value(tf.round(square), 0.0, 255.0), tf.uint8)


def encode(square: tf.Tensor, storage: str, quality: int) -> tf.Tensor:
    """jpeg: colour planes at half resolution (4:2:0, as most JPEG files, the originals too);
    jpeg444: full-resolution colour (a quarter slower to decode); raw: the uint8 pixels."""
    if storage.startswith("jpeg"):
        return tf.io.encode_jpeg(square, quality=quality,
                                 chroma_downsampling=storage == "jpeg")
    return square


def source_fingerprint(source: Source) -> str:
    """What identifies a source's content: its builder, version, config and split sizes."""
    info = source.builder.info
    identity = {"name": info.full_name, "splits": {
        split: source.num_examples(split) for split in (source.train_split, source.eval_split)},
        "classes": list(source.class_names)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


class PreparedImages(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """tfds builder: a source's train and evaluation splits as S x S squares."""

    VERSION = tfds.core.Version(PREPARED_VERSION)
    name = "alexnet_prepared"

    def __init__(self, source: Source, size: int, storage: str, quality: int, *,
                 data_dir: str | None = None, file_format: str = "tfrecord"):
        if storage not in FORMATS:
            raise ValueError(f"storage must be one of {FORMATS}, got {storage!r}")
        self._source, self._size, self._storage, self._quality = source, size, storage, quality
        settings = f"{source_fingerprint(source)}-{size}-{storage}"
        settings += f"{quality}" if storage.startswith("jpeg") else ""
        # TFRecord preparations keep the names they always had; ArrayRecord ones are apart
        settings += "" if file_format == "tfrecord" else f"-{file_format}"
        safe = "".join(c if c.isalnum() else "_" for c in source.builder.info.full_name)
        config = tfds.core.BuilderConfig(name=f"{safe}-{settings}")
        super().__init__(data_dir=data_dir, config=config, file_format=file_format)

    @property
    def storage(self) -> str:
        return self._storage

    def _info(self) -> tfds.core.DatasetInfo:
        shape = (self._size, self._size, 3)
        image = (tfds.features.Image(shape=shape, encoding_format="jpeg")
                 if self._storage.startswith("jpeg") else tfds.features.Tensor(
                     shape=shape, dtype=np.uint8, encoding=tfds.features.Encoding.BYTES))
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"{self._source.builder.info.full_name} down-sampled once to "
                        f"{self._size} x {self._size} ({self._storage})",
            features=tfds.features.FeaturesDict({
                "image": image,
                "label": tfds.features.ClassLabel(names=list(self._source.class_names))}),
            supervised_keys=("image", "label"))

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split)
                for split in (self._source.train_split, self._source.eval_split)}

    def _generate_examples(self, split: str):
        size, storage, quality = self._size, self._storage, self._quality
        ds = self._source.builder.as_dataset(
            split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
        ds = ds.enumerate().map(
            lambda index, ex: (index, encode(square_uint8(ex["image"], size), storage, quality),
                               ex["label"]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)
        with progress_bar(self._source.num_examples(split), f"down-sampling {split} to "
                          f"{size} x {size}", "img") as bar:
            for index, image, label in tfds.as_numpy(ds):
                bar.update(1)
                yield f"{split}-{index:09d}", {"image": image, "label": label}

    def download_and_prepare(self, *args, **kwargs):
        tfds.display_progress_bar(False)  # our bar instead of tfds's
        try:
            return super().download_and_prepare(*args, **kwargs)
        finally:
            tfds.display_progress_bar(True)

    def _log_download_bytes(self) -> None:
        counts = " + ".join(f"{self._source.num_examples(split)} {split}"
                            for split in (self._source.train_split, self._source.eval_split))
        logging.info("down-sampling %s (%s images) once to %d x %d (%s) at %s",
                     self._source.name, counts, self._size, self._size,
                     f"{self._storage} quality {self._quality}" if self._storage != "raw"
                     else "raw pixels",
                     self.data_dir)

    def _log_download_done(self) -> None:
        logging.info("prepared %s; later runs reuse it", self.data_dir)


# Bytes a stored square takes, per pixel: measured on ImageNet images at 256 x 256 (docs/performance.md).
BYTES_PER_PIXEL = {"raw": 3.0, "jpeg": 0.35, "jpeg444": 0.45}


def check_disk_space(source: Source, size: int, storage: str, data_dir: str) -> None:
    """Refuse to start a preparation that cannot fit on the disk (UserError, nothing written)."""
    images = sum(source.num_examples(split) for split in (source.train_split, source.eval_split))
    needed = images * size * size * BYTES_PER_PIXEL[storage] * (1.0 if storage == "raw" else 1.5)
    free = free_bytes(data_dir)
    if free < needed:
        raise UserError(
            f"preparing {images} images of {source.name} as {size} x {size} squares "
            f"({storage}) needs about {format_bytes(needed)}, but {data_dir} has "
            f"{format_bytes(free)} free. Free space, choose another --config.data.data_dir, "
            "store JPEG (--config.data.prepared_format=jpeg: about 22 KiB an image against 192 "
            "for raw), or train from the original files (--config.data.prepared=none).")


def prepare(source: Source, size: int, storage: str, quality: int, data_dir: str,
            file_format: str = "tfrecord") -> Source:
    """The source as its prepared S x S squares (kept in `data_dir`), prepared first if
    needed; in TFRecord files (which tf.data reads) or ArrayRecord files (which the
    TensorFlow-free reader, prepared_folder.py, reads)."""
    builder = PreparedImages(source, size, storage, quality, data_dir=data_dir,
                             file_format=file_format)
    if not builder.is_prepared():
        check_disk_space(source, size, storage, data_dir)
        preparation.prepare_once(builder)
    return Source(source.name, builder, source.train_split, source.eval_split,
                  source.class_names, source.skipped_images, prepared_size=size,
                  prepared_storage=storage, original=source)
