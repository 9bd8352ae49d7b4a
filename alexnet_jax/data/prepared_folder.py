"""`data.name=prepared`: train from a folder of prepared squares without TensorFlow.

`--mode=prepare` (or any run with `data.prepared=S`) writes a source's images once as S x S
squares into `<data_dir>/alexnet_prepared/<config>/<version>/` (prepared.py). That folder can
be copied to a machine that has JAX but no TensorFlow (a GPU box, a container) and trained from
there with `--config.data.name=prepared --config.data.path=<that folder>`. The host work is
that of the tf.data pipeline on prepared squares: decode each square (Pillow, on a thread per
host core; Pillow releases the GIL while it decodes), cut the crop window and mirror it; the
devices subtract the mean window and add the PCA colour shift (device_augment.py).

Differences from the tfds pipeline, by design: Pillow decodes JPEG squares with libjpeg's
accurate integer IDCT, tf.data with the fast one (one or two levels apart on average, at most a
few; raw squares are identical); an epoch visits the training images in a
seeded random permutation (tf.data uses file shuffling and a 10,000-image buffer), and every
process reads its part of each global batch from the same order (`interleaved`; `split` is
refused). Crops, flips and lighting are drawn from the epoch's seed, so a resumed run sees the
same batches. Statistics come from the folder's cache (`alexnet_stats_<S>_<sample>.npz`, written
by a run with TensorFlow) or are computed here from the decoded squares and cached.
"""

from __future__ import annotations

import collections
import contextlib
import concurrent.futures
import io
import json
import os
import weakref
from pathlib import Path
from typing import Iterator

import numpy as np
from absl import logging

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.progress import progress_bar
from alexnet_jax.data import augmentation, record_files, stats_files
from alexnet_jax.data.feeding import Shard, epoch_seed, eval_batches_per_process
from alexnet_jax.data.published_stats import DatasetStats

BUILDER_NAME = "alexnet_prepared"  # prepared.PreparedImages.name
BATCHES_AHEAD = 2  # training batches being decoded while the devices run the current one


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, ValueError) as error:
        raise UserError(f"{path} could not be read ({error}); data.path must be a folder of "
                        "prepared squares (see docs/data.md).") from error


def _read_json(path: Path) -> dict:
    try:
        return json.loads(_read_text(path))
    except ValueError as error:
        raise UserError(f"{path} is not JSON ({error}); data.path must be a folder of "
                        "prepared squares (see docs/data.md).") from error


def host_cores() -> int:
    """The cores this process may use (a cluster's allocation), not every core of the host;
    all of them where the platform cannot say (macOS)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def _metadata_errors(folder: Path):
    """Metadata that lacks what a prepared folder's holds, said as such."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise UserError(f"{folder}'s metadata (dataset_info.json, features.json) lacks what a "
                        f"prepared folder holds ({error!r}): prepare the data again, and copy "
                        "the whole folder.") from error


def _square(stored: bytes, storage: str, size: int, where: str) -> np.ndarray:
    """The S x S x 3 uint8 square of a stored image (raw pixels or a JPEG); UserError saying
    `where` if it cannot be decoded or is not S x S."""
    if storage == "raw" and len(stored) == size * size * 3:
        return np.frombuffer(stored, np.uint8).reshape(size, size, 3)
    from PIL import Image  # noqa: PLC0415 - only JPEG squares need Pillow

    try:
        if storage == "raw":
            raise OSError(f"{len(stored)} bytes of pixels, {size * size * 3} expected")
        with Image.open(io.BytesIO(stored)) as picture:
            if picture.mode != "RGB":  # never for squares this project wrote
                picture = picture.convert("RGB")
            picture.load()
            square = np.asarray(picture)  # no conversion copy: a quarter faster
    except OSError as error:
        raise UserError(f"{where} cannot be decoded ({error}); prepare the data again."
                        ) from error
    if square.shape != (size, size, 3):
        # a wrong size would shift every crop and misplace the mean's windows silently
        raise UserError(f"{where} is {square.shape[1]} x {square.shape[0]}, not the folder's "
                        f"{size} x {size}; the folder is damaged (prepare it again).")
    return square


def _cancel(futures) -> None:
    for future in futures:
        future.cancel()


class SplitRecords:
    """Where each record of one split lies: the shard files, and per record its file's number,
    offset and length (NumPy arrays: ImageNet's 1.28 M records take 26 MB)."""

    def __init__(self, folder: Path, info: dict, split: dict):
        template = split.get("filepathTemplate",
                             "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
        lengths = [int(n) for n in split["shardLengths"]]
        self.paths, files, offsets, sizes = [], [], [], []
        for shard, expected in enumerate(lengths):
            name = (template.replace("{DATASET}", info["name"])
                    .replace("{SPLIT}", split["name"])
                    .replace("{FILEFORMAT}", info.get("fileFormat", "tfrecord"))
                    .replace("{SHARD_X_OF_Y}", f"{shard:05d}-of-{len(lengths):05d}"))
            path = folder / name
            if not path.is_file():
                raise UserError(f"{path} is missing: the prepared folder is incomplete.")
            found_offsets, found_sizes = record_files.index_records(path)
            if len(found_offsets) != expected:
                raise UserError(f"{path} holds {len(found_offsets)} records, {expected} "
                                "expected: the prepared folder is incomplete (prepare it again).")
            self.paths.append(path)
            files.append(np.full(expected, shard, np.int32))
            offsets.append(found_offsets)
            sizes.append(found_sizes)
        self.files = np.concatenate(files) if files else np.zeros(0, np.int32)
        self.offsets = np.concatenate(offsets) if offsets else np.zeros(0, np.int64)
        self.sizes = np.concatenate(sizes) if sizes else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return len(self.files)

    def read(self, index: int) -> tuple[Path, bytes]:
        """(its file, the record's bytes)."""
        path = self.paths[self.files[index]]
        return path, record_files.read_record(path, int(self.offsets[index]),
                                              int(self.sizes[index]))


class PreparedFolder:
    """The examples of one prepared folder, read with NumPy and Pillow."""

    train_split = "train"

    def __init__(self, path: str, resize_size: int, stats_sample: int, workers: int = 0):
        self.folder = Path(path).expanduser()
        if not (self.folder / "dataset_info.json").is_file():
            raise UserError(
                f"data.path={path!r} holds no prepared squares (no dataset_info.json). Prepare "
                "them where TensorFlow is installed (python -m alexnet_jax.main --mode=prepare "
                "--config=...; it prints the folder, <data_dir>/alexnet_prepared/<config>/"
                "<version>) and name that folder.")
        info = _read_json(self.folder / "dataset_info.json")
        name = info.get("name") if isinstance(info, dict) else None
        if name != BUILDER_NAME:
            raise UserError(f"{self.folder} holds the tfds dataset {name!r}, not squares "
                            f"prepared by this project ({BUILDER_NAME}).")
        with _metadata_errors(self.folder):
            self._read_metadata(info)
        if resize_size != self.prepared_size:  # said before the (long) indexing of the records
            raise UserError(f"{self.folder} holds {self.prepared_size} x {self.prepared_size} "
                            f"squares but data.resize_size={resize_size}: set "
                            f"--config.data.resize_size={self.prepared_size} (and a crop no "
                            "larger), or prepare the data at the size you want.")
        with _metadata_errors(self.folder):
            self.class_names = tuple(
                _read_text(self.folder / "label.labels.txt").splitlines())
            self._records = {name: SplitRecords(self.folder, info, split)
                             for name, split in self._splits.items()}
        for name, records in self._records.items():
            if not len(records):
                raise UserError(f"{self.folder}'s {name} split holds no examples: nothing to "
                                "train or evaluate on (prepare the data again).")
        self.stats_sample = stats_sample
        self._pool = concurrent.futures.ThreadPoolExecutor(workers or host_cores())
        # the decoding threads go with the folder, also when nobody calls close()
        self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=False,
                                           cancel_futures=True)

    def _read_metadata(self, info: dict) -> None:
        features = _read_json(self.folder / "features.json")
        image = features["featuresDict"]["features"]["image"]
        self.prepared_storage = "jpeg" if "image" in image else "raw"
        shape = (image.get("image") or image.get("tensor"))["shape"]["dimensions"]
        self.prepared_size = int(shape[0])
        self._splits = {split["name"]: split for split in info["splits"]}
        others = sorted(set(self._splits) - {self.train_split})
        if self.train_split not in self._splits or len(others) != 1:
            raise UserError(f"{self.folder} must hold a train split and one evaluation split; "
                            f"it holds {sorted(self._splits)}.")
        self.eval_split = others[0]

    def close(self) -> None:
        """Stop the decoding threads (queued decodes are cancelled)."""
        self._finalizer()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def num_examples(self, split: str) -> int:
        return len(self._records[split])

    def example(self, split: str, index: int) -> tuple[np.ndarray, int]:
        """(the S x S x 3 uint8 square, its label) of one stored example (thread-safe)."""
        path, record = self._records[split].read(index)
        try:
            features = record_files.parse_example(record)
            stored, label = features["image"][0], int(features["label"][0])
        except (ValueError, KeyError, IndexError, TypeError) as error:
            raise UserError(f"{path}: record {index} of the {split} split is not a prepared "
                            f"example ({error}); the file is damaged (prepare it again)."
                            ) from error
        where = f"{path}: the image of record {index} of the {split} split"
        return _square(stored, self.prepared_storage, self.prepared_size, where), label

    def decode(self, split: str, indices, transform) -> list[concurrent.futures.Future]:
        """Futures of (transform(square), label) for each index, decoded on the pool."""
        def work(index, transform):
            square, label = self.example(split, index)
            return transform(square), label
        return [self._pool.submit(work, int(i), transform(int(i))) for i in indices]


def epoch_draws(prep, total: int, size: int, seed: int):
    """An epoch's random draws, per training image, from one seed: the order the images are
    visited in, each one's crop offsets (top, left) in [0, S - C], mirroring and lighting
    coefficients (N(0, 1) x data.lighting_strength)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(total)
    crop = prep.crop_size
    offsets = (rng.integers(0, size - crop + 1, (total, 2), dtype=np.int32)
               if prep.random_crop else np.full((total, 2), (size - crop) // 2, np.int32))
    flips = rng.random(total) < 0.5 if prep.random_flip else np.zeros(total, bool)
    alphas = rng.normal(0.0, 1.0, (total, 3)).astype(np.float32)
    alphas *= np.float32(prep.lighting_strength)
    return order, offsets, flips, alphas


def _computed_stats(folder: PreparedFolder, resize_size: int) -> DatasetStats:
    """The statistics of the folder's first stats_sample training squares (all if <= 0)."""
    total = folder.num_examples(folder.train_split)
    count = total if folder.stats_sample <= 0 else min(folder.stats_sample, total)
    sums = stats_files.StatsSums(resize_size)
    with progress_bar(count, f"statistics of {folder.folder.name}", "img") as bar:
        for start in range(0, count, 64):
            chunk = range(start, min(start + 64, count))
            futures = folder.decode(folder.train_split, chunk, lambda _: lambda square: square)
            try:
                sums.add(np.stack([future.result()[0] for future in futures]))
            finally:  # after a failure, the chunk's other decodes are not wanted
                _cancel(futures)
            bar.update(len(chunk))
    return sums.stats()


class PreparedFolderSource(PreparedFolder):
    """A prepared folder as a training source: statistics, training and evaluation batches."""

    name = "prepared"
    original = None  # the original files are not at hand: no --mode=features
    skipped_images: dict = {}


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
        uint8 crops (mirrored where flipped) with their offsets, flips and lighting
        coefficients, in the format of prepared tfds batches (augmentation.py)."""
        total = self.num_examples(self.train_split)
        crop = prep.crop_size
        order, offsets, flips, alphas = epoch_draws(prep, total, self.prepared_size,
                                                    epoch_seed(seed, epoch, 0))
        local = global_batch // shard.count

        def window(index):
            (top, left), flip = offsets[index], flips[index]

            def cut(square):
                patch = square[top:top + crop, left:left + crop]
                return patch[:, ::-1] if flip else patch
            return cut

        def submit(batch):
            picked = slice(batch * global_batch + shard.index * local,
                           batch * global_batch + (shard.index + 1) * local)
            return picked, self.decode(self.train_split, order[picked], window)

        def assemble(picked, futures):
            try:
                decoded = [future.result() for future in futures]
            finally:  # after a failure, the batch's other decodes are not wanted
                _cancel(futures)
            return {"pixels": np.stack([pixels for pixels, _ in decoded]),
                    "offsets": offsets[order[picked]], "flips": flips[order[picked]],
                    "alphas": alphas[order[picked]],
                    "labels": np.asarray([label for _, label in decoded], np.int32)}

        pending = collections.deque()
        try:
            for batch in range(start_batch, total // global_batch):
                pending.append(submit(batch))
                if len(pending) > BATCHES_AHEAD:
                    yield assemble(*pending.popleft())
            while pending:
                yield assemble(*pending.popleft())
        finally:  # a run that stops mid-epoch leaves no decoding behind
            for _, futures in pending:
                _cancel(futures)

    def eval_batches(self, prep, global_batch: int, views: int,
                     shard: Shard) -> Iterator[dict[str, np.ndarray]]:
        """This process's share of the evaluation split as uint8 views (the devices subtract
        the mean's windows), padded with mask 0 to the same number of batches everywhere."""
        total = self.num_examples(self.eval_split)
        mine = np.array_split(np.arange(total), shard.count)[shard.index]
        local = global_batch // shard.count
        crop = prep.crop_size
        for batch in range(eval_batches_per_process(self, global_batch, shard)):
            indices = mine[batch * local:(batch + 1) * local]
            pixels = np.zeros((local, views, crop, crop, 3), np.uint8)
            batch_labels = np.zeros(local, np.int32)
            futures = self.decode(self.eval_split, indices, lambda _: lambda square:
                                   augmentation.crop_views(square, crop, views))
            try:
                for row, future in enumerate(futures):
                    pixels[row], batch_labels[row] = future.result()
            finally:  # after a failure or a stop, the batch's other decodes are not wanted
                _cancel(futures)
            mask = np.zeros(local, np.float32)
            mask[:len(indices)] = 1.0
            yield {"pixels": pixels, "labels": batch_labels, "mask": mask}
