"""Shared test helpers: generated ImageFolder trees and tiny configs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_CROP = 67          # conv1 15x15 -> pool1 7 -> pool2 3 -> pool5 1 (cuda-convnet geometry)
TINY_RESIZE = 76
TINY_CONV = (8, 16, 16, 16, 16)
TINY_FC = (32, 32)
CLASSES = ("ant", "bee", "cat", "dog", "eel")


def make_image_tree(root: Path, train_per_class: int = 8, val_per_class: int = 3,
                    odd_files: bool = False, seed: int = 0,
                    classes: tuple[str, ...] = CLASSES) -> Path:
    """Write an ImageFolder tree of class-coloured JPEGs (sizes vary: 48x40 .. 70x90).

    With odd_files: a greyscale JPEG, a CMYK JPEG, an RGBA PNG and a corrupt file in train/.
    """
    from PIL import Image

    rng = np.random.RandomState(seed)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                height, width = rng.randint(40, 71), rng.randint(48, 91)
                colour = np.array([50 * label, 255 - 50 * label, 120]) + rng.randint(-20, 20, 3)
                noise = rng.randint(-30, 30, (height, width, 3))
                pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:03d}.jpg", quality=90)
    if odd_files:
        grey = rng.randint(0, 255, (50, 60), dtype=np.uint8)
        Image.fromarray(grey).save(root / "train" / "ant" / "grey.jpg")
        rgb = rng.randint(0, 255, (50, 60, 3), dtype=np.uint8)
        Image.fromarray(rgb).convert("CMYK").save(root / "train" / "bee" / "cmyk.jpg")
        rgba = rng.randint(0, 255, (50, 60, 4), dtype=np.uint8)
        Image.fromarray(rgba).save(root / "train" / "cat" / "alpha.png")
        (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


# An initialisation under which a tiny network's outputs and losses follow its parameters and
# images: at the paper's (std 0.01, biases 1) they move by under a float32 step when the images
# change, so a run fed the wrong images, or a fresh network, would pass for the right one.
VISIBLE_INIT = ["--config.model.init_std=0.1", "--config.model.positive_bias=0.1"]


def file_versions(directory) -> dict[str, tuple[int, int, int]]:
    """Every file under `directory` with its size, inode and modification time: equal before and
    after something only if that something rewrote nothing there."""
    directory = Path(directory)
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_ino,
                                            p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def tiny_config(tree: Path, data_dir: Path):
    """configs/default.py with tiny widths and crops, training on `tree`."""
    from configs.default import get_config

    config = get_config()
    config.unlock()
    config.data.name = "folder"
    config.data.path = str(tree)
    config.data.data_dir = str(data_dir)
    config.data.crop_size = TINY_CROP
    config.data.resize_size = TINY_RESIZE
    config.data.prepared = "none"  # the original files (tests/test_prepared.py: the squares)
    config.model.conv_widths = TINY_CONV
    config.model.fc_widths = TINY_FC
    config.train.batch_size = 8
    config.train.eval_batch_size = 8
    config.train.num_epochs = 1
    config.train.log_every_steps = 1
    config.lock()
    return config


IMAGENET_WNIDS = ("n01440764", "n01443537", "n01484850")  # the first three ILSVRC-2012 classes


def make_imagenet_tars(manual_dir: Path, per_class: int = 4, val_images: int = 6,
                       seed: int = 0) -> Path:
    """ILSVRC2012_img_train.tar (one tar of JPEGs per WordNet ID inside) and
    ILSVRC2012_img_val.tar (flat ILSVRC2012_val_XXXXXXXX.JPEG files), as image-net.org ships
    them and as tfds's imagenet2012 builder reads them."""
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415

    rng = np.random.RandomState(seed)

    def jpeg_bytes(label: int) -> bytes:
        height, width = rng.randint(40, 80), rng.randint(40, 80)
        pixels = np.clip(np.array([80 * label, 200 - 60 * label, 100])
                         + rng.randint(-30, 30, (height, width, 3)), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG")
        return buffer.getvalue()

    def add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    manual_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(manual_dir / "ILSVRC2012_img_train.tar", "w") as outer:
        for label, wnid in enumerate(IMAGENET_WNIDS):
            inner_bytes = io.BytesIO()
            with tarfile.open(fileobj=inner_bytes, mode="w") as inner:
                for i in range(per_class):
                    add(inner, f"{wnid}_{i + 1}.JPEG", jpeg_bytes(label))
            add(outer, f"{wnid}.tar", inner_bytes.getvalue())
    with tarfile.open(manual_dir / "ILSVRC2012_img_val.tar", "w") as tar:
        for i in range(val_images):
            add(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", jpeg_bytes(i % 3))
    return manual_dir


def signal_masks(pid: int | str = "self") -> dict[str, int]:
    """A process's blocked, ignored and caught signals (SigBlk, SigIgn, SigCgt of
    /proc/<pid>/status, bit n - 1 for signal n); {} once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    fields = (line.split(":\t") for line in lines
              if line.startswith(("SigBlk", "SigIgn", "SigCgt")))
    return {name: int(value, 16) for name, value in fields}
