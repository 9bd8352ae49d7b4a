"""Preparing a dataset under its folder's lock, after removing what an interrupted preparation
left behind.

tensorflow-datasets writes a dataset into a temporary folder beside it
(`incomplete.<random>_<version>/`) and renames it when complete; a preparation killed part-way
(SIGKILL, a lost machine) leaves that folder, tens of GB at ImageNet's size, and no later run
removes it. Here every preparation holds an advisory lock on the dataset's folder
(`.prepare.lock`, released by the kernel however the process ends), and, holding it, removes
the leftovers of earlier preparations of the same dataset, saying what and how large: no other
process can be writing them, since a preparation in progress holds the lock (a second one waits
for it, then finds the dataset prepared).
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
from pathlib import Path
from typing import Iterator

from absl import logging

from alexnet_jax.common.disk import directory_bytes, format_bytes

LOCK_FILE = ".prepare.lock"
LEFTOVER_PATTERN = "incomplete.*"  # tensorflow-datasets' temporary folders and files


@contextlib.contextmanager
def locked(dataset_dir: Path) -> Iterator[None]:
    """Hold the lock of the folder that holds `dataset_dir` (a tfds builder's data_dir: its
    versions and their temporary folders), waiting for another preparation to end first."""
    parent = Path(dataset_dir).parent
    parent.mkdir(parents=True, exist_ok=True)
    with (parent / LOCK_FILE).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logging.warning("another process is preparing %s; waiting for it to finish", parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftovers(dataset_dir: Path) -> list[tuple[Path, int]]:
    """Delete the temporary folders and files that interrupted preparations left beside
    `dataset_dir` (call it holding `locked`); returns each with its size, also logged."""
    removed = []
    for path in sorted(Path(dataset_dir).parent.glob(LEFTOVER_PATTERN)):
        size = directory_bytes(path) if path.is_dir() else path.stat().st_size
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append((path, size))
        logging.warning("removed %s (%s), left by an interrupted preparation", path,
                        format_bytes(size))
    return removed


def prepare_once(builder) -> None:
    """`builder.download_and_prepare()` unless it is prepared, under the lock and after the
    leftovers are removed."""
    with locked(Path(builder.data_dir)):
        remove_leftovers(Path(builder.data_dir))
        if not builder.is_prepared():  # another process may have prepared it meanwhile
            builder.download_and_prepare()
