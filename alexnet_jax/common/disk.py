"""Sizes on disk: the folder a path would live in, free space there, and bytes as text."""

from __future__ import annotations

import shutil
from pathlib import Path


def existing_ancestor(path: str | Path) -> Path:
    """`path` itself if it exists, else its nearest existing parent (where it would be made)."""
    existing = Path(path).expanduser().absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return existing


def free_bytes(path: str | Path) -> int:
    """Free bytes on the device that holds `path` (or would, once it is created)."""
    return shutil.disk_usage(existing_ancestor(path)).free


def directory_bytes(path: str | Path) -> int:
    """The bytes of every file under `path`."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def format_bytes(count: float) -> str:
    """1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"
