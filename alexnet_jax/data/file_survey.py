"""What an ImageFolder tree holds, for a report's header: how many image files, their median
size in pixels and their mean size on disk (image headers only; nothing is decoded)."""

from __future__ import annotations

import dataclasses
import os
import statistics
from pathlib import Path

from alexnet_jax.data.folder_builder import IMAGE_SUFFIXES


@dataclasses.dataclass(frozen=True)
class FileSurvey:
    path: Path
    files: int
    unreadable: int
    median_width: float
    median_height: float
    mean_bytes: float

    def describe(self) -> str:
        return (f"{self.path}: {self.files} image files, median {self.median_width:g} x "
                f"{self.median_height:g} pixels, mean {self.mean_bytes / 1024:.1f} KiB"
                + (f" ({self.unreadable} unreadable)" if self.unreadable else ""))


def survey(path: str | os.PathLike) -> FileSurvey:
    """Every image file under `path` (recursively)."""
    from PIL import Image  # noqa: PLC0415

    root = Path(path)
    widths, heights, sizes, unreadable = [], [], [], 0
    for file in sorted(root.rglob("*")):
        if not (file.is_file() and file.name.lower().endswith(IMAGE_SUFFIXES)):
            continue
        sizes.append(file.stat().st_size)
        try:
            with Image.open(file) as image:  # reads the header only
                widths.append(image.width)
                heights.append(image.height)
        except Exception:  # noqa: BLE001 - counted, not fatal
            unreadable += 1
    median = lambda values: statistics.median(values) if values else 0  # noqa: E731
    return FileSurvey(root, len(sizes), unreadable, median(widths), median(heights),
                      statistics.fmean(sizes) if sizes else 0.0)
