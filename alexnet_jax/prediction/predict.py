"""A trained run's network on images: top-5 predictions (--mode=predict) and the 4096-d fc7
feature vectors (--mode=features; the CIFAR-10 net's last hidden layer), as in the paper's
Figure 4 (section 6.1).

Images are preprocessed as the validation images are (shorter side to data.resize_size, central
square, mean image subtracted; the centre crop or the paper's 10 views, softmax averaged).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Iterator

import jax
import numpy as np

from alexnet_jax.common.errors import UserError
from alexnet_jax.data import catalog, class_names
from alexnet_jax.common.run_files import CLASS_NAMES_FILE, CONFIG_FILE, STATS_FILE
from alexnet_jax.data import stats_files
from alexnet_jax.data.augmentation import (Preprocessing, preprocessing_from_config,
                                           preprocessing_from_stats)
from alexnet_jax.data.folder_builder import IMAGE_SUFFIXES, describe_failure, is_metadata_file
from alexnet_jax.model import build
from alexnet_jax.training import resume_policy
from alexnet_jax.training import run as training_run
from alexnet_jax.training.checkpoints import checkpointing


@dataclasses.dataclass
class TrainedRun:
    """The network of a workdir's checkpoint, with what is needed to feed it."""

    model: Any
    prep: Preprocessing          # validation preprocessing of original image files
    names: tuple[str, ...]       # readable class names
    raw_names: tuple[str, ...]   # the dataset's own class names (e.g. WordNet IDs)
    step: int
    source: Any                  # the dataset, when it was opened (None: from the workdir alone)

    def predict(self, paths: list[str], views: int = 1) -> list[dict[str, Any]]:
        """Each image's top 5 ({"path", "top5": [[class, probability], ...]}, or {"path",
        "error"}): `paths` are image files or folders; views 1 (centre crop) or 10."""
        return list(predict(self, paths, views))


def load_trained(config, workdir: str | Path, step: int | None = None) -> TrainedRun:
    """The network of the workdir's latest (or given) checkpoint that restores; UserError if
    there is none, or if it was trained with another model than `config` describes. Reads
    only: an unreadable checkpoint is reported and the next older one tried, nothing moved."""
    workdir = Path(workdir).expanduser().absolute()
    if not training_run.has_checkpoints(workdir):
        raise UserError(f"{workdir} has no checkpoint; train first (the same command with "
                        "--mode=train).")
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=1 << 30,
                                              asynchronous=False)
    try:
        steps = sorted(checkpointer.all_steps(), reverse=True)
        if step is not None and step not in steps:
            raise UserError(f"no checkpoint at step {step} in {checkpointer.directory}; "
                            f"available: {sorted(steps)}")
        # the model is checked before the dataset is opened (which may prepare it)
        fingerprint = training_run.model_fingerprint(config, None)
        failures = []
        for candidate in [step] if step is not None else steps:
            path = checkpointer.directory / str(candidate)
            try:
                saved = checkpointer.restore_progress(candidate).get("fingerprint")
                params = checkpointing.load_params(path / "params")
            except Exception as error:  # noqa: BLE001 - any failure: try an older checkpoint
                failures.append(f"{path} ({checkpointing.error_line(error)})")
                logging.warning("checkpoint %s cannot be restored; trying an older one", path)
                continue
            resume_policy.check_same_model(saved, fingerprint, str(path),
                                           compare_classes=False)
            break
        else:
            raise UserError("no checkpoint can be restored: " + "; ".join(failures))
    finally:
        checkpointer.close()
    source = catalog.open_dataset(config)
    resume_policy.check_same_model(
        saved, training_run.model_fingerprint(config, source.num_classes), str(path))
    prep = preprocessing_from_config(config, source, progress=False)
    model = build.model_with_params(config, source.num_classes, params)
    return TrainedRun(model, dataclasses.replace(prep, prepared_storage=None),
                      class_names.readable(source.class_names), tuple(source.class_names),
                      candidate, source)


def load_workdir(workdir: str | Path, step: int | None = None) -> TrainedRun:
    """The trained network of a workdir, ready for `predict`, from the workdir alone: its
    config.json (the run's config), its class names and input statistics (written by the run
    at its start), and its newest checkpoint that restores (or `step`'s). Needs neither the
    dataset nor this repository's `configs`: it works from any directory once the package is
    installed. Workdirs trained before runs kept their classes and statistics fall back to
    opening the dataset their config names. UserError when something is missing."""
    from ml_collections import ConfigDict  # noqa: PLC0415

    workdir = Path(workdir).expanduser().absolute()
    config_file = workdir / CONFIG_FILE
    if not config_file.is_file():
        raise UserError(f"{workdir} holds no {CONFIG_FILE}: it is not the workdir of a "
                        "training run (python -m alexnet_jax.main --workdir=DIR writes one).")
    config = ConfigDict(json.loads(config_file.read_text()))
    names_file, stats_file = workdir / CLASS_NAMES_FILE, workdir / STATS_FILE
    needs_stats = config.data.mean != "none" or config.data.lighting != "none"
    if names_file.is_file() and (stats_file.is_file() or not needs_stats):
        raw_names = tuple(json.loads(names_file.read_text()))
        stats = stats_files.load_stats(stats_file) if needs_stats else None
        prep = preprocessing_from_stats(config, stats)
    else:  # an older workdir: its classes and statistics from its dataset
        source = catalog.open_dataset(config)
        raw_names = tuple(source.class_names)
        prep = dataclasses.replace(preprocessing_from_config(config, source, progress=False),
                                   prepared_storage=None)
    params, step = _newest_params(workdir, step)
    model = build.model_with_params(config, len(raw_names), params)
    return TrainedRun(model, prep, class_names.readable(raw_names), raw_names, step, None)


def _newest_params(workdir: Path, step: int | None) -> tuple[dict[str, Any], int]:
    """(the parameters, their step) of the newest checkpoint that restores, or of `step`."""
    if not training_run.has_checkpoints(workdir):
        raise UserError(f"{workdir} has no checkpoint; train first.")
    checkpointer = checkpointing.Checkpointer(workdir / "checkpoints", keep=1 << 30,
                                              asynchronous=False)
    try:
        steps = sorted(checkpointer.all_steps(), reverse=True)
    finally:
        checkpointer.close()
    if step is not None and step not in steps:
        raise UserError(f"no checkpoint at step {step} in {workdir / 'checkpoints'}; "
                        f"available: {sorted(steps)}")
    failures = []
    for candidate in [step] if step is not None else steps:
        path = workdir / "checkpoints" / str(candidate) / "params"
        try:
            return checkpointing.load_params(path), candidate
        except Exception as error:  # noqa: BLE001 - any failure: try an older checkpoint
            failures.append(f"{path} ({checkpointing.error_line(error)})")
            logging.warning("checkpoint %s cannot be restored; trying an older one", path)
    raise UserError("no checkpoint can be restored: " + "; ".join(failures))


def image_files(paths: list[str]) -> list[Path]:
    """The files named, and the image files under the folders named (sorted)."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
                            and not is_metadata_file(p.name))
        else:
            files.append(path)
    return files


def load_views(path: Path, prep: Preprocessing, views: int) -> np.ndarray:
    """(views, crop, crop, 3) float32 network inputs of one image file; raises ValueError with
    a plain cause (empty file, not an image, truncated JPEG, ...) when it cannot be read."""
    from alexnet_jax.data.folder_builder import read_image_for_storage  # noqa: PLC0415

    if not path.is_file():
        raise ValueError("no such file")
    try:
        data = read_image_for_storage(path)  # any mode Pillow reads, as 8-bit RGB
    except Exception as error:  # noqa: BLE001 - any failure: report its plain cause
        raise ValueError(describe_failure(path, error)) from error
    return np.asarray(prep.eval_views(data, views))


def top_k(probabilities: np.ndarray, names: tuple[str, ...], k: int = 5) -> list:
    order = np.argsort(-probabilities)[:k]
    return [[names[i], round(float(probabilities[i]), 6)] for i in order]


def probabilities(model, images_BxVxHxWx3: np.ndarray) -> np.ndarray:
    """Softmax outputs averaged over the views: (B, classes)."""
    batch, views = images_BxVxHxWx3.shape[:2]
    flat = images_BxVxHxWx3.reshape(batch * views, *images_BxVxHxWx3.shape[2:])
    flat = _padded(list(flat), model.mesh.shape["data"])
    logits = np.asarray(jax.device_get(model(flat)))[:batch * views]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return probs.reshape(batch, views, -1).mean(axis=1)


def _padded(images: list[np.ndarray], multiple: int) -> np.ndarray:
    """Stack, padding the batch to a multiple of the mesh's data axis with blank images."""
    stack = np.stack(images)
    extra = -len(stack) % multiple
    return np.concatenate([stack, np.zeros((extra, *stack.shape[1:]), stack.dtype)]) \
        if extra else stack


def predict(run: TrainedRun, paths: list[str], views: int = 1, batch: int = 32
            ) -> Iterator[dict[str, Any]]:
    """One record per image: {"path", "top5": [[class name, probability], ...]} or
    {"path", "error"} for a file that cannot be read (the others go on)."""
    pending: list[tuple[Path, np.ndarray | str]] = []  # views, or why the file is unreadable

    def flush():
        readable = [views_ for _, views_ in pending if not isinstance(views_, str)]
        probs = iter(probabilities(run.model, np.stack(readable)) if readable else [])
        for path, views_ in pending:  # in the order given
            yield ({"path": str(path), "error": views_} if isinstance(views_, str) else
                   {"path": str(path), "top5": top_k(next(probs), run.names)})
        pending.clear()

    for path in image_files(paths):
        try:
            pending.append((path, load_views(path, run.prep, views)))
        except ValueError as error:
            pending.append((path, str(error)))
        if len(pending) == batch:
            yield from flush()
    if pending:
        yield from flush()


def fc7_batches(run: TrainedRun, items: Iterable[tuple[Any, np.ndarray]], batch: int = 64
                ) -> Iterator[tuple[list[Any], np.ndarray]]:
    """For (key, centre-crop input) pairs, batch by batch: (the batch's keys, their (n, 4096)
    fc7 vectors). Only one batch of inputs is held at a time."""
    multiple = run.model.mesh.shape["data"]
    keys, inputs = [], []
    for key, image in items:
        keys.append(key)
        inputs.append(image)
        if len(inputs) == batch:
            yield keys, _features(run, inputs, multiple)
            keys, inputs = [], []
    if inputs:
        yield keys, _features(run, inputs, multiple)


def _features(run: TrainedRun, inputs: list[np.ndarray], multiple: int) -> np.ndarray:
    vectors = jax.device_get(run.model.features(_padded(inputs, multiple)))
    return np.asarray(vectors, np.float32)[:len(inputs)]


def split_examples(run: TrainedRun, split: str, limit: int = 0
                   ) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
    """(name, label, centre-crop input, centre crop for display as uint8) of a split's images
    in the dataset's stored order, from the original files (names where the source has them)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415

    from alexnet_jax.data import preprocess  # noqa: PLC0415

    original = getattr(run.source, "original", None) or run.source
    if not hasattr(original, "builder"):
        raise UserError(f"--mode=features reads a split's original files through "
                        f"tensorflow-datasets; data.name={run.source.name} has none. Use the "
                        "dataset the squares were prepared from (its data.name and data.path).")
    builder = original.builder
    has_names = "file_name" in builder.info.features
    split_name = {"train": original.train_split, "val": original.eval_split}.get(split, split)
    data = builder.as_dataset(split=split_name, shuffle_files=False,
                              decoders={"image": tfds.decode.SkipDecoding()})
    if limit:
        data = data.take(limit)
    crop = run.prep.crop_size
    for index, example in enumerate(tfds.as_numpy(data)):
        square = run.prep.decoded_square(example["image"]).numpy()
        display = np.asarray(preprocess.central_crop(square, crop), np.uint8)
        inputs = np.asarray(run.prep.eval_views(example["image"], 1))[0]
        name = example["file_name"].decode() if has_names else f"{split_name}[{index}]"
        yield name, int(example["label"]), inputs, display


def write_features(run: TrainedRun, output: Path, split: str | None = None,
                   paths: list[str] | None = None, limit: int = 0) -> tuple[int, Path, Path]:
    """fc7 vectors of a split (or of image files) to `output` (a .npy file) and an index beside
    it (`<name>.index.jsonl`: one {"row", "path", "label", "class"} per row). Vectors are
    written batch by batch (memory stays flat for any split) to temporary files, renamed into
    place once complete. Returns (rows, npy path, index path)."""
    output = Path(output)
    if output.suffix != ".npy":
        raise UserError(f"--output={output}: the features file must end in .npy.")

    def from_files():
        for path in image_files(paths):
            try:
                yield (str(path), None), load_views(path, run.prep, 1)[0]
            except ValueError as error:
                raise UserError(f"{path} cannot be read: {error}") from error

    def from_split():
        for name, label, image, _ in split_examples(run, split or "val", limit):
            yield (name, label), image

    output.parent.mkdir(parents=True, exist_ok=True)
    index = output.with_suffix(".index.jsonl")
    partial = {path: path.with_name(path.name + ".partial") for path in (output, index)}
    raw = output.with_name(output.name + ".raw.partial")
    rows, width = 0, 0
    try:
        with raw.open("wb") as vectors_out, partial[index].open("w") as index_out:
            for keys, vectors in fc7_batches(run, from_files() if paths else from_split()):
                vectors_out.write(vectors.tobytes())
                width = vectors.shape[1]
                for name, label in keys:
                    index_out.write(json.dumps({
                        "row": rows, "path": name, "label": label,
                        "class": None if label is None else run.names[label]}) + "\n")
                    rows += 1
        with partial[output].open("wb") as out, raw.open("rb") as vectors_in:
            np.lib.format.write_array_header_1_0(out, {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False, "shape": (rows, width)})
            shutil.copyfileobj(vectors_in, out)
        for final, temporary in partial.items():
            os.replace(temporary, final)
    finally:
        for leftover in (raw, *partial.values()):
            leftover.unlink(missing_ok=True)
    return rows, output, index
