"""`data.name=prepared`: train from a folder of prepared squares without TensorFlow, on the JAX
ecosystem's own parts.

`--mode=prepare --config.data.file_format=array_record` writes a source's images once as S x S
squares in ArrayRecord files (tensorflow-datasets' own writer, prepared.py) into
`<data_dir>/alexnet_prepared/<config>/<version>/`. That folder can be copied to a machine that
has JAX and tensorflow-datasets but no TensorFlow (a GPU box, a container) and trained from there
with `--config.data.name=prepared --config.data.path=<that folder>`:

- tensorflow-datasets' data source reads the records (random access; ArrayRecord's index is in
  the file's footer, and every chunk read is checked against the hash stored with it, so a
  flipped bit in a label or an image is refused, naming the file);
- Grain's MapDataset orders each epoch (its index shuffle, seeded by seed and epoch), decodes
  each square (simplejpeg: libjpeg-turbo's fast integer IDCT, tf.data's exact pixels, twice
  Pillow's speed, docs/performance.md), cuts the crop window and batches this process's part of
  each global batch, in `data.read_workers` worker processes (one iterator for the whole run:
  a worker takes seconds to start). The devices mirror the crops and finish the augmentation
  (device_augment.py).

Batch k of epoch e is a pure function of (seed, e, k): a resumed run sees the same batches, and
the parts fed by several processes concatenate to the one-process batch (`feeding.Shard`, which
follows the mesh's data rows). Crops, flips and lighting are drawn per image from (the epoch's
seed, its position in the epoch). By design the order differs from tf.data's (file shuffling and
a 10,000-image buffer). Statistics come from the folder's cache
(`alexnet_stats_<S>_<sample>.npz`) or are computed here from the decoded squares and cached.
A folder of TFRecord files (the default preparation, which tf.data reads) is refused with the
way to convert it.

The folder is checked as a whole when it is opened (prepared_files.py): a missing file of the
preparation is called missing, and a file that does not belong to it is refused, naming it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from absl import logging

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.progress import progress_bar
from alexnet_jax.data import grain_batches, prepared_files, stats_files
from alexnet_jax.data.feeding import Shard, eval_batches_per_process
from alexnet_jax.data.grain_batches import host_cores
from alexnet_jax.data.published_stats import DatasetStats

ARRAY_RECORD = "array_record"


@functools.cache
def _example():
    """tf.train.Example, from tensorflow-datasets' copy of the proto (no TensorFlow needed)."""
    from tensorflow_datasets.proto import tf_example_pb2  # noqa: PLC0415

    return tf_example_pb2.Example


def decode_square(stored: bytes, storage: str, size: int,
                  scratch: np.ndarray | None = None) -> np.ndarray:
    """The S x S x 3 uint8 square of a stored image (raw pixels or a JPEG), decoded into
    `scratch` (bytes, at least S * S * 3) when given; UserError (its text continues a sentence
    naming the record) if it cannot be decoded or is not S x S."""
    if storage == "raw":
        if len(stored) != size * size * 3:
            raise UserError(f"holds {len(stored)} bytes of pixels, not the {size * size * 3} "
                            f"of a {size} x {size} square; prepare the data again.")
        return np.frombuffer(stored, np.uint8).reshape(size, size, 3)
    import simplejpeg  # noqa: PLC0415

    try:
        # the fast integer IDCT: exactly what tf.data's decode_jpeg gives
        square = simplejpeg.decode_jpeg(stored, colorspace="RGB", fastdct=True, buffer=scratch)
    except ValueError as error:
        if scratch is not None:  # too large for the scratch, or broken: say which
            return decode_square(stored, storage, size)
        raise UserError(f"cannot be decoded ({error}); prepare the data again.") from error
    if square.shape != (size, size, 3):
        # a wrong size would shift every crop and misplace the mean's windows silently
        raise UserError(f"is {square.shape[1]} x {square.shape[0]}, not the folder's "
                        f"{size} x {size}; the folder is damaged (prepare it again).")
    return square


def folder_metadata(folder: Path, info) -> dict[str, Any]:
    """What a prepared folder's tfds metadata says (class names, square size and storage, its
    splits), checked: UserError for TFRecord files, other splits or an empty one."""
    file_format = str(getattr(info.file_format, "value", info.file_format))
    if file_format != ARRAY_RECORD:
        raise UserError(
            f"{folder} holds {file_format} files, which only tf.data (TensorFlow) reads. Train "
            "from them with TensorFlow (data.name=<the original dataset> with data.prepared=S "
            "finds this preparation), or prepare the squares again as ArrayRecord for this "
            "reader: the same command with --mode=prepare --config.data.file_format="
            "array_record (it prints the new folder), then --config.data.path=<that folder>.")
    image, label = info.features["image"], info.features["label"]
    splits = sorted(info.splits.keys())
    if "train" not in splits or len(splits) != 2:
        raise UserError(f"{folder} holds the splits {splits}: a prepared folder holds 'train' "
                        "and one evaluation split; prepare the data again.")
    for split in splits:
        if not info.splits[split].num_examples:
            raise UserError(f"{folder}: its {split} split holds no examples; prepare the data "
                            "again.")
    names = tuple(label.names)
    return {"class_names": names, "num_classes": len(names),
            "prepared_size": int(image.shape[0]),
            "prepared_storage": "raw" if type(image).__name__ == "Tensor" else "jpeg",
            "train_split": "train", "eval_split": next(s for s in splits if s != "train"),
            "_info": info}


class PreparedFolder:
    """A prepared folder's metadata and records (tensorflow-datasets' data source)."""

    def __init__(self, path: str, resize_size: int, stats_sample: int, workers: int = -1):
        self.folder = Path(path).expanduser().absolute()
        self.stats_sample = stats_sample
        # one core is left to the training process (its loop, the devices' dispatch)
        self.workers = max(1, host_cores() - 1) if workers < 0 else workers
        prepared_files.check_metadata_files(self.folder)
        import tensorflow_datasets as tfds  # noqa: PLC0415 - needs no TensorFlow for this

        try:
            self._builder = tfds.builder_from_directory(self.folder)
            self.__dict__.update(folder_metadata(self.folder, self._builder.info))
            prepared_files.check_files(self.folder, self._builder.info)
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - whatever tfds finds wrong: the folder's
            raise UserError(f"{self.folder}'s metadata (dataset_info.json, features.json, "
                            f"label.labels.txt) cannot be read as a prepared folder's ({error})"
                            ": prepare the data again, and copy the whole folder.") from error
        if self.prepared_size != resize_size:
            raise UserError(f"{self.folder} holds {self.prepared_size} x {self.prepared_size} "
                            f"squares, but data.resize_size={resize_size}; set "
                            f"--config.data.resize_size={self.prepared_size} (crops are cut from "
                            "the stored squares).")
        self._sources: dict[str, Any] = {}

    def close(self) -> None:
        """Nothing is held open but the data sources, which close with the process."""

    def num_examples(self, split: str) -> int:
        return int(self._info.splits[split].num_examples)

    def shard_file(self, split: str, index: int) -> Path:
        """The file that holds record `index` of `split`."""
        first = 0
        for instruction in self._info.splits[split].file_instructions:
            count = instruction.take if instruction.take >= 0 else instruction.examples_in_shard
            if index < first + count:
                return self.folder / Path(instruction.filename).name
            first += count
        raise IndexError(index)

    def record(self, split: str, index: int) -> tuple[bytes, int]:
        """(stored image bytes, label) of record `index`, checked: a record whose chunk does
        not match its hash, or does not parse, is refused naming its file."""
        if split not in self._sources:
            # the ArrayRecord source under tensorflow-datasets' data source: its records parsed
            # here with tfds' Example proto, 0.020 CPU-ms a record against the data source's own
            # Python decoding's 0.054 (experiments/benchmark_decoding.py)
            self._sources[split] = self._builder.as_data_source(split).data_source
        try:
            feature = _example().FromString(self._sources[split][index]).features.feature
            return (feature["image"].bytes_list.value[0],
                    int(feature["label"].int64_list.value[0]))
        except Exception as error:  # noqa: BLE001 - riegeli's RuntimeError, a proto error
            raise UserError(f"record {index} of the {split} split in "
                            f"{self.shard_file(split, index)} is damaged ({error}); copy the "
                            "folder again from a good copy, or prepare the data again."
                            ) from error

    def example(self, split: str, index: int,
                scratch: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """(the S x S x 3 uint8 square, label) of one record; the square decoded into
        `scratch` (decode_square) when given."""
        stored, label = self.record(split, index)
        try:
            return decode_square(stored, self.prepared_storage, self.prepared_size,
                                 scratch), label
        except UserError as error:  # where it is, found only then (it costs a tenth of a read)
            raise UserError(f"record {index} of the {split} split in "
                            f"{self.shard_file(split, index)} {error}") from None

    def __getstate__(self):  # workers get the folder, not its open data sources
        return {**self.__dict__, "_sources": {}}


def _computed_stats(folder: PreparedFolder, resize_size: int) -> DatasetStats:
    """The statistics of the folder's first stats_sample training squares (all if <= 0)."""
    grain = grain_batches.grain_module()
    total = folder.num_examples(folder.train_split)
    count = total if folder.stats_sample <= 0 else min(folder.stats_sample, total)
    sums = stats_files.StatsSums(resize_size)
    squares = grain.MapDataset.range(count).map(grain_batches.Square(folder)).batch(64)
    squares = squares.to_iter_dataset(grain.ReadOptions(num_threads=host_cores(),
                                                        prefetch_buffer_size=2))
    with progress_bar(count, f"statistics of {folder.folder.name}", "img") as bar:
        for batch in squares:
            sums.add(batch)
            bar.update(len(batch))
    return sums.stats()


class PreparedFolderSource(PreparedFolder):
    """A prepared folder as a training source: statistics, training and evaluation batches."""

    name = "prepared"
    original = None  # the original files are not at hand: no --mode=features
    skipped_images: dict = {}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stream: grain_batches.RunStream | None = None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def __getstate__(self):
        return {**super().__getstate__(), "_stream": None}

    def dataset_stats(self, resize_size: int) -> DatasetStats:
        """The mean image and RGB covariance of the first data.stats_sample training squares
        (all if <= 0): from the folder's cache, else computed and cached."""
        path = self.folder / stats_files.stats_file_name(resize_size, self.stats_sample)
        if path.exists():
            return stats_files.load_stats(path)
        stats = _computed_stats(self, resize_size)
        try:
            stats_files.save_stats(stats, path)
        except OSError as error:
            logging.warning("could not cache dataset statistics at %s (%s)", path, error)
        return stats

    def train_batches(self, prep, global_batch: int, seed: int, epoch: int, start_batch: int,
                      shard: Shard) -> Iterator[dict[str, np.ndarray]]:
        """This process's part of each global batch of the epoch, from `start_batch` on:
        uint8 crops (unmirrored) with their offsets, flips and lighting coefficients, in the
        format of prepared tfds batches (augmentation.py). The run's one stream continues when
        the next epoch asks for the batch after the last one given."""
        steps = self.num_examples(self.train_split) // global_batch
        batches = grain_batches.TrainingBatches(
            self, seed, global_batch, shard, steps, prep.crop_size, prep.random_crop,
            prep.random_flip, float(prep.lighting_strength))
        first = epoch * steps + start_batch
        if (self._stream is None or self._stream.batches != batches
                or self._stream.next_step != first):
            self.close()
            self._stream = grain_batches.RunStream(self, batches, first)
        return self._stream.take(steps - start_batch)

    def eval_batches(self, prep, global_batch: int, views: int,
                     shard: Shard) -> Iterator[dict[str, np.ndarray]]:
        """This process's share of the evaluation split as uint8 views (the devices subtract
        the mean's windows), padded with mask 0 to the same number of batches everywhere."""
        grain = grain_batches.grain_module()
        total = self.num_examples(self.eval_split)
        mine = np.array_split(np.arange(total), shard.count)[shard.index]
        span = (int(mine[0]), int(mine[-1]) + 1) if len(mine) else (0, 0)
        local = global_batch // shard.count
        slots = eval_batches_per_process(self, global_batch, shard) * local
        views_of = grain_batches.EvaluationViews(self, self.eval_split, span, prep.crop_size,
                                                 views)
        batches = grain.MapDataset.range(slots).map(views_of).batch(local).to_iter_dataset(
            grain.ReadOptions(num_threads=host_cores(),
                              prefetch_buffer_size=grain_batches.BATCHES_AHEAD))
        yield from batches
