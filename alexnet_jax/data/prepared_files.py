"""The files of a prepared folder (`data.name=prepared`, prepared_folder.py), checked as a whole
before a record is read.

A preparation leaves exactly these in its folder: what tensorflow-datasets' writer wrote
(prepared.py) - `dataset_info.json` and `features.json` (the metadata), `label.labels.txt` (the
class names: prepared.py always gives them, and without the file tensorflow-datasets would name
the classes '0', '1', ...) and the shards the splits of `dataset_info.json` name
(`alexnet_prepared-<split>.array_record-<i>-of-<n>`) - and the statistics caches of the runs
that trained from it (`alexnet_stats_<S>_<sample>.npz`, stats_files.py, with the temporary file
of one being written). A missing file is called missing, naming it; anything else in the folder
is refused, naming it, with what to do: a TFRecord shard copied beside the ArrayRecord ones, a
shard of another preparation or another shard count that no split names, or a leftover of an
interrupted write (`incomplete.*`) says the folder is not the preparation its metadata
describes, and would otherwise be trained from without a word.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from alexnet_jax.common.errors import UserError

METADATA = {"dataset_info.json": "the splits and their shards",
            "features.json": "the features: image size and storage",
            "label.labels.txt": "the class names"}
STATS_PATTERN = "alexnet_stats_*.npz"  # stats_files.stats_file_name and its temporary file
AGAIN = "copy the whole folder again from where it was prepared, or prepare the data again"


def _missing(folder: Path, name: str, what: str) -> UserError:
    return UserError(f"{folder} is missing {name} ({what}), which every prepared folder holds: "
                     f"{AGAIN}.")


def check_metadata_files(folder: Path) -> None:
    """Before tensorflow-datasets reads the metadata: UserError for a folder that holds no
    preparation, or one of whose metadata files is missing (tensorflow-datasets would fail
    on it with another cause, or name the classes '0', '1', ...)."""
    missing = [name for name in METADATA if not (folder / name).is_file()]
    if "dataset_info.json" in missing and not (
            set(METADATA) - set(missing) or list(folder.glob("*.array_record-*"))):
        raise UserError(
            f"{folder} holds no prepared squares (no dataset_info.json): data.path must be the "
            "folder `--mode=prepare --config.data.file_format=array_record` names, "
            "<data_dir>/alexnet_prepared/<config>/<version> (docs/data.md).")
    if missing:
        raise _missing(folder, missing[0], METADATA[missing[0]])


def check_files(folder: Path, info) -> None:
    """With the metadata read (tfds DatasetInfo `info`): UserError naming a shard a split needs
    that is missing, or what in the folder does not belong to the preparation."""
    belonging = set(METADATA)
    for split, split_info in sorted(info.splits.items()):
        # every shard of the split belongs; those that hold records must be there
        belonging.update(path.name for path in split_info.filepaths)
        for instruction in split_info.file_instructions:
            name = Path(instruction.filename).name
            if not (folder / name).is_file():
                raise _missing(folder, name, f"a shard of the {split} split, "
                                             f"{instruction.examples_in_shard} records")
    strays = sorted(entry for entry in folder.iterdir() if entry.name not in belonging and not (
        entry.is_file() and fnmatch.fnmatch(entry.name, STATS_PATTERN)))
    if strays:
        raise UserError(_stray_message(folder, strays))


def _what_it_is(entry: Path) -> str:
    """Why a stray entry does not belong, as its name or kind tells."""
    if entry.name.startswith("incomplete."):
        return ("a leftover of an interrupted tensorflow-datasets write (a preparation or a "
                "copy killed part-way)")
    if ".tfrecord" in entry.name:
        return ("a TFRecord shard among the ArrayRecord ones (a TFRecord preparation copied "
                "into this folder?), which this reader never reads")
    if ".array_record" in entry.name:
        return ("an ArrayRecord shard that no split of dataset_info.json names (of another "
                "preparation, or of another number of shards), whose records would never be read")
    return "a folder" if entry.is_dir() else "a file that is not the preparation's"


def _stray_message(folder: Path, strays: list[Path]) -> str:
    others, them = "", strays[0].name
    if len(strays) > 1:
        names = ", ".join(entry.name for entry in strays[1:4])
        others = (f" It holds {len(strays) - 1} more that do not belong ({names}"
                  f"{', ...' if len(strays) > 4 else ''}).")
        them = "them"
    return (f"{folder} holds {strays[0].name}: {_what_it_is(strays[0])}.{others} A prepared "
            "folder holds only its metadata (dataset_info.json, features.json, label.labels.txt),"
            f" the shards its splits name and statistics caches ({STATS_PATTERN}): move {them} "
            f"out of the folder (delete a leftover), or {AGAIN}.")
