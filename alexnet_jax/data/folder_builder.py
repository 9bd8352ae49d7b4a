"""Any ImageFolder tree (`train/<class>/*`, `val/<class>/*`) as a tensorflow-datasets builder.

The tree is prepared once into tfds's own format (TFRecords + dataset_info.json) under
`<data_dir>/alexnet_image_folder/<tree name>-<fingerprint>/`. The fingerprint covers every file's
path, size and modification time, so a changed tree is prepared again. Preparation checks every
image: JPEG and PNG files TensorFlow can decode are stored byte for byte; other modes (CMYK,
RGBA, 16-bit, palette) and other formats are converted to RGB and stored as lossless PNG;
unreadable or corrupt files are skipped, counted and listed in `skipped_images.json`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import os
from pathlib import Path

import tensorflow_datasets as tfds
from absl import logging

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
SPLITS = ("train", "val")
SKIPPED_FILE = "skipped_images.json"
# Bump when the stored format changes, so prepared trees are rebuilt.
PREPARATION_VERSION = "1.0.0"


@dataclasses.dataclass(frozen=True)
class FolderTree:
    """What is in an ImageFolder tree: class names and, per split, (relative path, label)."""

    root: Path
    class_names: tuple[str, ...]
    files: dict[str, tuple[tuple[str, int], ...]]
    fingerprint: str


def scan_tree(root: str | os.PathLike) -> FolderTree:
    """List the tree's images; classes are the sorted folder names under `train/`."""
    root = Path(root)
    class_names = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    label_of = {name: i for i, name in enumerate(class_names)}
    digest = hashlib.sha256(PREPARATION_VERSION.encode())
    files = {}
    for split in SPLITS:
        entries = []
        split_dir = root / split
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []:
            if class_dir.name not in label_of:
                raise ValueError(f"{class_dir} is a class that {root / 'train'} does not have")
            for entry in sorted(os.scandir(class_dir), key=lambda e: e.name):
                if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES):
                    relative = f"{split}/{class_dir.name}/{entry.name}"
                    stat = entry.stat()
                    digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                    entries.append((relative, label_of[class_dir.name]))
        files[split] = tuple(entries)
    return FolderTree(root, class_names, files, digest.hexdigest()[:12])


def read_image_for_storage(path: Path) -> bytes:
    """The bytes to store for one image file; raises on an unreadable or corrupt image."""
    from PIL import Image  # noqa: PLC0415 - only preparation needs Pillow

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: truncated or corrupt files raise here
        if image.format in ("JPEG", "PNG") and image.mode in ("RGB", "L"):
            return data
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, format="PNG")
        return buffer.getvalue()


def _check(path: Path) -> bytes | str:
    try:
        return read_image_for_storage(path)
    except Exception as error:  # noqa: BLE001 - any failure to read means: skip and count
        return f"{type(error).__name__}: {error}"


class AlexnetImageFolder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """tfds builder over one ImageFolder tree; one builder config per tree fingerprint."""

    VERSION = tfds.core.Version(PREPARATION_VERSION)

    def __init__(self, tree: FolderTree, *, data_dir: str | None = None, workers: int = 8):
        self._tree = tree
        self._workers = workers
        self._skipped: dict[str, list[dict[str, str]]] = {}
        safe_name = "".join(c if c.isalnum() else "_" for c in tree.root.resolve().name)
        config = tfds.core.BuilderConfig(name=f"{safe_name}-{tree.fingerprint}")
        super().__init__(data_dir=data_dir, config=config)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"ImageFolder tree {self._tree.root}",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=list(self._tree.class_names)),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split)
                for split in SPLITS if self._tree.files.get(split)}

    def _generate_examples(self, split: str):
        entries = self._tree.files[split]
        skipped = self._skipped.setdefault(split, [])
        with concurrent.futures.ThreadPoolExecutor(self._workers) as pool:
            paths = (self._tree.root / relative for relative, _ in entries)
            for (relative, label), result in zip(entries, pool.map(_check, paths)):
                if isinstance(result, str):
                    skipped.append({"path": relative, "error": result})
                    continue
                yield relative, {"image": result, "label": label, "file_name": relative}

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config=download_config)
        for split, items in self._skipped.items():
            for item in items:
                logging.warning("skipped unreadable image %s (%s)", item["path"], item["error"])
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.data_dir) / SKIPPED_FILE).write_text(json.dumps(self._skipped, indent=1))

    def skipped_images(self) -> dict[str, list[dict[str, str]]]:
        """Images left out at preparation, per split: [{"path", "error"}, ...]."""
        path = Path(self.data_dir) / SKIPPED_FILE
        return json.loads(path.read_text()) if path.exists() else {}
