"""The datasets a run can train on, each a tensorflow-datasets builder, and how to get them.

`config.data.name`:
  imagenet2012  tfds `imagenet2012` (ILSVRC-2012), prepared from the two tar files that the user
                downloads by hand into `<data_dir>/downloads/manual/`.
  imagenette    tfds `imagenette/full-size-v2` (downloaded by tfds where the internet is reachable).
  cifar10       tfds `cifar10` (downloaded by tfds).
  folder        any ImageFolder tree at `config.data.path` (see folder_builder.py).
For imagenette and cifar10, a non-empty `config.data.path` names a local ImageFolder copy of the
dataset (e.g. ../shared/data/imagenette2-224), read through the folder source instead.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import tensorflow_datasets as tfds

from alexnet_jax.common.errors import UserError
from alexnet_jax.data import folder_builder, preparation

IMAGENET_TARS = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
TFDS_DATASETS = {  # name -> (tfds name, train split, evaluation split)
    "imagenet2012": ("imagenet2012", "train", "validation"),
    "imagenette": ("imagenette/full-size-v2", "train", "validation"),
    "cifar10": ("cifar10", "train", "test"),
}
SOURCE_NAMES = (*TFDS_DATASETS, "folder")
# Where tfds downloads each dataset from: checked before a download starts, since tfds retries
# an unreachable host for minutes (213 s for Imagenette here) before it gives up.
DOWNLOAD_HOSTS = {"imagenette": "s3.amazonaws.com", "cifar10": "www.cs.toronto.edu"}
# what the names of tfds's download files for each source contain (tfds names them after the
# URL, e.g. cs.toronto.edu_kriz_cifar-10-binary<checksum>.tar.gz)
DOWNLOAD_FILE_NAMES = {"imagenette": "imagenette2", "cifar10": "cifar-10"}
CONNECT_TIMEOUT_S = 5.0


@dataclasses.dataclass
class Source:
    """A prepared dataset: its tfds builder and which splits train and evaluate."""

    name: str
    builder: tfds.core.DatasetBuilder
    train_split: str
    eval_split: str
    class_names: tuple[str, ...]
    skipped_images: dict[str, list[dict[str, str]]]
    prepared_size: int = 0                # > 0: images stored as S x S squares (prepared.py)
    prepared_storage: str | None = None   # their storage: "jpeg", "jpeg444" or "raw"
    original: "Source | None" = None      # for prepared squares: the source of the files

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def num_examples(self, split: str) -> int:
        return int(self.builder.info.splits[split].num_examples)

    @property
    def prepared_dir(self) -> Path:
        return Path(self.builder.data_dir)


def default_data_dir(data_dir: str) -> str:
    """`data.data_dir`, or tfds's default (TFDS_DATA_DIR or ~/tensorflow_datasets)."""
    return os.path.expanduser(data_dir) if data_dir else str(tfds.core.constants.DATA_DIR)


def open_source(name: str, path: str = "", data_dir: str = "") -> Source:
    """The prepared dataset `name`, preparing it first if needed; UserError says how to get it."""
    data_dir = default_data_dir(data_dir)
    if name == "folder" or (name in ("imagenette", "cifar10") and path):
        return _open_folder(path, data_dir, name)
    if name not in TFDS_DATASETS:
        raise UserError(f"data.name={name!r} is not a dataset this project knows; use one of "
                        f"{', '.join(SOURCE_NAMES)}.")
    tfds_name, train_split, eval_split = TFDS_DATASETS[name]
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if not builder.is_prepared():
        if name == "imagenet2012":
            _require_imagenet_tars(builder, data_dir)
        _prepare_or_explain(builder, name, data_dir)
    label = builder.info.features["label"]
    return Source(name, builder, train_split, eval_split, tuple(label.names), {})


def _open_folder(path: str, data_dir: str, name: str = "folder") -> Source:
    root = Path(os.path.expanduser(path)) if path else None
    if root is not None and not root.exists():
        raise UserError(f"data.path={path!r} does not exist. Pass "
                        "--config.data.path=/path/to/tree, an ImageFolder tree "
                        "(train/<class>/*.jpg and val/<class>/*.jpg).")
    if root is None or not (root / "train").is_dir():
        raise UserError(
            f"data.name={name!r} needs data.path to be an ImageFolder tree with a train/ folder "
            f"(train/<class>/*.jpg and val/<class>/*.jpg); got data.path={path!r}. Pass "
            "--config.data.path=/path/to/tree.")
    try:
        tree = folder_builder.scan_tree(root)
    except (OSError, ValueError) as error:
        raise UserError(f"the ImageFolder tree at {root} cannot be used: {error}.") from error
    for split in folder_builder.SPLITS:
        if not tree.files.get(split):
            raise UserError(f"the ImageFolder tree at {root} has no images under {split}/; it "
                            f"needs {split}/<class>/<image> files (JPEG or PNG).")
    builder = folder_builder.AlexnetImageFolder(tree, data_dir=data_dir)
    if not builder.is_prepared():
        preparation.prepare_once(builder)
    skipped = builder.skipped_images()
    unreadable_classes = folder_builder.classes_without_images(tree, skipped)
    if unreadable_classes:
        raise UserError(f"no image of {len(unreadable_classes)} class folder(s) of {root / 'train'} "
                        f"could be read: {folder_builder.some_names(unreadable_classes)} (the causes are listed in "
                        f"{builder.data_dir}/{folder_builder.SKIPPED_FILE}); every class needs "
                        "readable training images: fix or add them, or remove the folders.")
    for split in folder_builder.SPLITS:
        if builder.info.splits[split].num_examples == 0:
            raise UserError(f"every image under {root / split} was unreadable "
                            f"({len(skipped.get(split, []))} skipped, see "
                            f"{builder.data_dir}/{folder_builder.SKIPPED_FILE}).")
    return Source(name, builder, "train", "val", tree.class_names, skipped)


def _require_imagenet_tars(builder, data_dir: str) -> None:
    manual_dir = Path(data_dir) / "downloads" / "manual"
    missing = [name for name in IMAGENET_TARS if not (manual_dir / name).exists()]
    if missing:
        raise UserError(
            "ImageNet (ILSVRC-2012) is not prepared and cannot be downloaded automatically. "
            "To provide it: (1) log in at https://image-net.org/download-images.php and download "
            f"{' and '.join(IMAGENET_TARS)} (about 147 GB in all); (2) put them in "
            f"{manual_dir}/ (missing now: {', '.join(missing)}); (3) run the same command again: "
            "tensorflow-datasets prepares them once (hours) into "
            f"{builder.data_dir}. To use another location pass --config.data.data_dir=DIR (the "
            "tars then go in DIR/downloads/manual/). Without ImageNet, train on any ImageFolder "
            "tree with --config.data.name=folder --config.data.path=DIR, or use "
            "configs/imagenette.py.")


def unreachable_reason(host: str, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why a TCP connection to host:443 fails within `timeout` seconds (None if it works)."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return None
    except OSError as error:
        return f"{host} cannot be reached: {error.strerror or error}"


def must_reach(name: str, data_dir: str) -> bool:
    """Whether preparing source `name` needs a direct connection to its download host: not
    through a proxy (a direct check would say nothing), nor when tfds already holds the
    download in <data_dir>/downloads."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return False
    downloads, fragment = Path(data_dir) / "downloads", DOWNLOAD_FILE_NAMES.get(name)
    return not (fragment and downloads.is_dir()
                and any(fragment in p.name for p in downloads.iterdir()))


def _prepare_or_explain(builder, name: str, data_dir: str) -> None:
    def explain(cause: str) -> UserError:
        return UserError(
            f"could not prepare the {name} dataset with tensorflow-datasets ({cause}). "
            "tfds downloads it on first use, which needs the internet; it keeps it in "
            f"{data_dir} (set --config.data.data_dir to change). Offline, point the folder "
            "source at a local copy: --config.data.name=folder --config.data.path=DIR with "
            "DIR/train/<class>/* and DIR/val/<class>/*.")

    host = DOWNLOAD_HOSTS.get(name)
    reason = unreachable_reason(host) if host and must_reach(name, data_dir) else None
    if reason:
        raise explain(reason)
    try:
        preparation.prepare_once(builder)
    except Exception as error:  # noqa: BLE001 - network, disk and format errors all land here
        first_line = str(error).splitlines()[0] if str(error) else ""
        raise explain(f"{type(error).__name__}: {first_line}") from error
