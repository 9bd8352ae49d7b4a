"""What one process of a multi-process run reads per epoch, `interleaved` against `split`.

With data.process_sharding=interleaved every process scans the whole shuffled training split
and decodes only its part of each global batch (so the batches are the same for any number of
processes); with `split` each part reads only its own 1/count of the files. This runs the
training input of part 0 of `count` for one epoch, as that process would, and prints the bytes
it read (the kernel's count of bytes the process read, /proc/self/io rchar), the images it
produced and the time it took, for count = 1, 2, 4 and both modes.

Run (Imagenette prepared as 146 x 146 raw squares, as configs/imagenette128.py trains):
    python experiments/measure_process_reads.py --config=configs/imagenette128.py \
        --path=../shared/data/imagenette2-224
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow_datasets as tfds  # noqa: E402

from alexnet_jax.data import catalog, pipeline  # noqa: E402
from alexnet_jax.data.augmentation import preprocessing_from_config  # noqa: E402
from alexnet_jax.data.feeding import Shard  # noqa: E402


def bytes_read() -> int:
    """Bytes this process has read through read() calls (page-cache hits included)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("no rchar in /proc/self/io")


def one_epoch(source, prep, config, mode: str, shard: Shard) -> dict:
    """Part `shard` of epoch 0's training batches: bytes read, images, seconds."""
    before, start, images = bytes_read(), time.perf_counter(), 0
    dataset = pipeline.train_dataset(source, prep, config.train.batch_size, config.seed, 0, 0,
                                     config.data.shuffle_buffer, shard=shard,
                                     process_sharding=mode)
    for batch in tfds.as_numpy(dataset):
        images += len(batch["labels"])
    return {"mode": mode, "parts": shard.count, "bytes_read": bytes_read() - before,
            "images": images, "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/imagenette128.py")
    parser.add_argument("--path", default="../shared/data/imagenette2-224")
    parser.add_argument("--parts", default="1,2,4")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    module = importlib.import_module(args.config.removesuffix(".py").replace("/", "."))
    config = module.get_config()
    with config.unlocked():
        config.data.name, config.data.path = "folder", args.path
    source = catalog.open_dataset(config)
    prep = preprocessing_from_config(config, source)
    split_bytes = sum(path.stat().st_size for path in
                      Path(source.builder.data_dir).glob(f"*-{source.train_split}.*"))
    print(f"{source.name}: {source.num_examples(source.train_split):,} training images, "
          f"{split_bytes / 2**20:,.0f} MiB of prepared records")
    rows = []
    print("| mode | processes feeding distinct parts | bytes read by part 0 | images it "
          "produced | seconds |")
    print("|---|---|---|---|---|")
    for parts in map(int, args.parts.split(",")):
        for mode in ("interleaved", "split") if parts > 1 else ("interleaved",):
            row = one_epoch(source, prep, config, mode, Shard(0, parts))
            rows.append(row)
            print(f"| {mode} | {parts} | {row['bytes_read'] / 2**20:,.0f} MiB | "
                  f"{row['images']:,} | {row['seconds']} |", flush=True)
    record = {"config": args.config, "dataset": source.name,
              "train_examples": source.num_examples(source.train_split),
              "split_bytes": split_bytes, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
