"""Any ImageFolder tree (`train/<class>/*`, `val/<class>/*`) as a tensorflow-datasets builder.

The tree is prepared once into tfds's own format (TFRecords + dataset_info.json) under
`<data_dir>/alexnet_image_folder/<tree name>-<fingerprint>/`. The fingerprint covers every file's
path, size and modification time, so a changed tree is prepared again. Preparation checks every
image: JPEG and PNG files TensorFlow can decode are stored byte for byte; other modes (CMYK,
RGBA, palette) and other formats are converted to RGB and stored as lossless PNG;
16-bit, 32-bit and float images are scaled to 8 bits (to_8bit_rgb); unreadable or corrupt files are
skipped, counted and listed with a plain cause (empty, not an image, truncated) in
`skipped_images.json`.
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

from alexnet_jax.common.progress import progress_bar

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm")
SPLITS = ("train", "val")
SKIPPED_FILE = "skipped_images.json"
# Bump when the stored format changes, so prepared trees are rebuilt.
PREPARATION_VERSION = "1.1.0"  # 1.1: 16-bit and float images scaled, not clipped


@dataclasses.dataclass(frozen=True)
class FolderTree:
    """What is in an ImageFolder tree: class names and, per split, (relative path, label)."""

    root: Path
    class_names: tuple[str, ...]
    files: dict[str, tuple[tuple[str, int], ...]]
    fingerprint: str
    # per split, macOS metadata files named like images (AppleDouble `._x.jpg`, written beside
    # every file a Mac copies to a foreign disk): not images, left out and counted
    metadata_files: dict[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)


APPLEDOUBLE = "._"
METADATA_CAUSE = "a macOS metadata file (AppleDouble ._ file), not an image"


def is_metadata_file(name: str) -> bool:
    """A macOS AppleDouble file (`._cat.jpg`): ignored like `.DS_Store`."""
    return name.startswith(APPLEDOUBLE)


def scan_tree(root: str | os.PathLike) -> FolderTree:
    """List the tree's images; classes are the sorted folder names under `train/`.

    Raises ValueError when a class folder of train/ holds no image file, or when val/ has a
    class that train/ lacks (a network cannot learn a class it never sees; torchvision's
    ImageFolder refuses such trees too).
    """
    root = Path(root)
    class_names = tuple(sorted(p.name for p in (root / "train").iterdir() if p.is_dir()))
    label_of = {name: i for i, name in enumerate(class_names)}
    digest = hashlib.sha256(PREPARATION_VERSION.encode())
    files, metadata = {}, {}
    for split in SPLITS:
        entries, ignored = [], []
        split_dir = root / split
        class_dirs = sorted(p for p in split_dir.iterdir() if p.is_dir()) if split_dir.is_dir() else []
        unknown = [d.name for d in class_dirs if d.name not in label_of]
        if unknown:
            raise ValueError(f"{split}/ has {len(unknown)} class(es) that train/ does not have: "
                             f"{some_names(unknown)} (in {split_dir}); every class needs training "
                             f"images: add them under train/ or remove those folders from "
                             f"{split}/")
        empty = []
        for class_dir in class_dirs:
            named = [entry for entry in sorted(os.scandir(class_dir), key=lambda e: e.name)
                     if entry.is_file() and entry.name.lower().endswith(IMAGE_SUFFIXES)]
            images = [entry for entry in named if not is_metadata_file(entry.name)]
            ignored += [f"{split}/{class_dir.name}/{entry.name}" for entry in named
                        if is_metadata_file(entry.name)]
            if split == "train" and not images:
                empty.append(str(class_dir))
            for entry in images:
                relative = f"{split}/{class_dir.name}/{entry.name}"
                stat = entry.stat()
                digest.update(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
                entries.append((relative, label_of[class_dir.name]))
        if empty:
            raise ValueError(f"{len(empty)} class folder(s) of train/ hold no image file: "
                             f"{some_names(empty)}; every class needs training images (file "
                             f"names ending in {', '.join(IMAGE_SUFFIXES)}): add them, or remove "
                             "the folders")
        files[split] = tuple(entries)
        if ignored:
            metadata[split] = tuple(ignored)
    return FolderTree(root, class_names, files, digest.hexdigest()[:12], metadata)


def some_names(names: list[str], shown: int = 5) -> str:
    """The first few names, and how many more (messages stay one readable paragraph)."""
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def classes_without_images(tree: FolderTree, skipped: dict[str, list[dict[str, str]]]
                           ) -> list[str]:
    """The train/ class folders none of whose images could be read."""
    unreadable = {item["path"] for item in skipped.get("train", [])}
    readable = {relative.split("/")[1] for relative, _ in tree.files.get("train", ())
                if relative not in unreadable}
    return [str(tree.root / "train" / name) for name in tree.class_names if name not in readable]


# The leading bytes of the image formats Pillow reads here, to say what a file that fails is.
MAGIC_BYTES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP",
               b"RIFF": "WebP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


def to_8bit_rgb(image) -> "Image.Image":
    """Any Pillow image as 8-bit RGB. 16-bit, 32-bit integer and float modes are scaled from
    their range to 0-255 (Pillow's own convert('RGB') clips them: a 16-bit grey of 104/255 came
    out white). The range: 0-65535 for 16-bit modes and for PNGs (whose integer modes are 16-bit
    at most); otherwise the smallest of 0-1 (floats only), 0-255, 0-65535 and 0-(2^32 - 1) that
    holds the pixels."""
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    mode = image.mode
    if not (mode.startswith("I") or mode == "F"):
        return image if mode == "RGB" else image.convert("RGB")
    pixels = np.asarray(image, dtype=np.float64)
    if mode.startswith("I;16") or (mode == "I" and image.format == "PNG"):
        top = 65535.0
    else:
        low, high = float(pixels.min(initial=0.0)), float(pixels.max(initial=0.0))
        if low < 0:
            pixels, high = pixels - low, high - low
        ranges = ((1.0,) if mode == "F" else ()) + (255.0, 65535.0, 2.0 ** 32 - 1)
        top = next((r for r in ranges if high <= r), high)
    grey = np.clip(np.round(pixels * (255.0 / top)), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def read_image_for_storage(path: Path) -> bytes:
    """The bytes to store for one image file; raises on an unreadable or corrupt image."""
    from PIL import Image  # noqa: PLC0415 - only preparation needs Pillow

    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as image:
        image.load()  # decodes every pixel: truncated or corrupt files raise here
        if image.format in ("JPEG", "PNG") and image.mode in ("RGB", "L"):
            return data  # (16-bit RGB PNGs open as RGB; TensorFlow decodes them to 8 bits too)
        buffer = io.BytesIO()
        to_8bit_rgb(image).save(buffer, format="PNG")
        return buffer.getvalue()


def describe_failure(path: Path, error: Exception) -> str:
    """A plain cause for an image that cannot be read: empty, not an image, truncated, ..."""
    try:
        size = path.stat().st_size
        head = path.open("rb").read(16)
    except OSError as os_error:
        return f"cannot be read ({os_error.strerror})"
    if size == 0:
        return "empty file (0 bytes)"
    kind = next((name for magic, name in MAGIC_BYTES.items() if head.startswith(magic)), None)
    if kind is None:
        looks_like_text = all(32 <= b < 127 or b in b"\t\r\n" for b in head)
        return ("not an image: the file holds text" if looks_like_text else
                f"not an image in a known format (first bytes {head[:8].hex(' ')})")
    message = str(error)
    if "truncated" in message.lower() or isinstance(error, EOFError):
        return f"truncated {kind} file ({size} bytes)"
    return f"corrupt {kind} file ({size} bytes): {message}"


def _check(path: Path) -> bytes | str:
    try:
        return read_image_for_storage(path)
    except Exception as error:  # noqa: BLE001 - any failure to read means: skip and count
        return describe_failure(path, error)


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
        skipped += [{"path": relative, "error": METADATA_CAUSE}
                    for relative in self._tree.metadata_files.get(split, ())]
        chunk = 4 * self._workers  # read ahead a few images per thread, never the whole split
        with concurrent.futures.ThreadPoolExecutor(self._workers) as pool, progress_bar(
                len(entries), f"preparing {split}/", "img") as bar:
            for start in range(0, len(entries), chunk):
                part = entries[start:start + chunk]
                paths = [self._tree.root / relative for relative, _ in part]
                for (relative, label), result in zip(part, pool.map(_check, paths)):
                    bar.update(1)
                    if isinstance(result, str):
                        skipped.append({"path": relative, "error": result})
                        continue
                    yield relative, {"image": result, "label": label, "file_name": relative}

    def download_and_prepare(self, *args, **kwargs):
        """Prepare with this builder's own message and progress bars instead of tfds's."""
        tfds.display_progress_bar(False)
        try:
            return super().download_and_prepare(*args, **kwargs)
        finally:
            tfds.display_progress_bar(True)

    def _log_download_bytes(self) -> None:
        counts = " + ".join(f"{len(self._tree.files.get(split, ()))} {split}" for split in SPLITS)
        logging.info("preparing the ImageFolder tree %s (%s image files, %d classes) once into "
                     "tensorflow-datasets format at %s", self._tree.root, counts,
                     len(self._tree.class_names), self.data_dir)

    def _log_download_done(self) -> None:
        logging.info("prepared %s; later runs reuse it", self.data_dir)

    def _download_and_prepare(self, dl_manager, download_config=None):
        super()._download_and_prepare(dl_manager, download_config=download_config)
        for split, items in self._skipped.items():
            for item in items:
                if item["error"] != METADATA_CAUSE:  # those are ignored, like .DS_Store
                    logging.warning("skipped unreadable image %s: %s",
                                    self._tree.root / item["path"], item["error"])
        Path(self.data_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.data_dir) / SKIPPED_FILE).write_text(json.dumps(self._skipped, indent=1))

    def skipped_images(self) -> dict[str, list[dict[str, str]]]:
        """Images left out at preparation, per split: [{"path", "error"}, ...]."""
        path = Path(self.data_dir) / SKIPPED_FILE
        return json.loads(path.read_text()) if path.exists() else {}
