"""A prepared folder whose training split is another's repeated N times (hard links where the
file system allows, else copies), for measuring the input pipeline on a small set of real
images at a realistic epoch length: every repeat is decoded again, so the host does the work of
an epoch of N x as many images. No TensorFlow needed (it edits dataset_info.json).

    python experiments/enlarge_prepared.py --source PREPARED --dest /tmp/prepared_x32 --times 32
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path


def shard_name(info: dict, split: dict, index: int, count: int) -> str:
    """A shard's file name, as tensorflow-datasets forms it."""
    template = split.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
    return (template.replace("{DATASET}", info["name"]).replace("{SPLIT}", split["name"])
            .replace("{FILEFORMAT}", info.get("fileFormat", "tfrecord"))
            .replace("{SHARD_X_OF_Y}", f"{index:05d}-of-{count:05d}"))


def place(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def enlarge(source: Path, dest: Path, times: int) -> int:
    """Write dest; return its number of training examples."""
    info = json.loads((source / "dataset_info.json").read_text())
    if dest.resolve() == source.resolve() or dest.resolve() in source.resolve().parents:
        raise SystemExit(f"--dest {dest} would replace the source {source}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    train = next(split for split in info["splits"] if split["name"] == "train")
    shards = len(train["shardLengths"])
    for path in source.iterdir():
        # statistics are not copied: those of the larger split's first N images differ
        if ("-train." not in path.name and path.name != "dataset_info.json"
                and not path.name.startswith("alexnet_stats_")):
            place(path, dest / path.name)
    for repeat in range(times):
        for shard in range(shards):
            place(source / shard_name(info, train, shard, shards),
                  dest / shard_name(info, train, repeat * shards + shard, shards * times))
    train["shardLengths"] = train["shardLengths"] * times
    train["numBytes"] = str(int(train.get("numBytes", 0)) * times)
    (dest / "dataset_info.json").write_text(json.dumps(info, indent=1))
    return sum(int(n) for n in train["shardLengths"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True)
    parser.add_argument("--dest", type=Path, required=True)
    parser.add_argument("--times", type=int, default=32)
    args = parser.parse_args()
    count = enlarge(args.source, args.dest, args.times)
    print(f"{args.dest}: {count} training examples ({args.times} x those of {args.source})")


if __name__ == "__main__":
    main()
