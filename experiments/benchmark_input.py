"""Throughput of the host input pipeline, from the original files and from the prepared squares.

For each format - `original` (decode the file, resize to 256, central square, mean image,
random 224 crop, flip, PCA lighting: all on the host, float32) and `prepared` (the squares
written once; the host decodes only each random crop's window of the stored JPEG, or slices raw
pixels; the mirror, the mean image and the lighting are added on the devices, see
alexnet_jax/data/device_augment.py) - with and without PCA lighting, on 1 core and on every
core (the process pinned to them, tf.data given as many threads): augmented training images
per second (batch 128; the median of --repeats measurements), printed per core.

`--readers` instead compares the two readers of the same prepared JPEG squares: tf.data
(TFRecord files, pinned to 1 core) and the TensorFlow-free reader of data.name=prepared
(ArrayRecord files through tensorflow-datasets' data source: in 1 thread of the reading process,
pinned to 1 core, and with 1 and 2 worker processes), each in a process of its own, alternated
over --rounds rounds: images per second, images per CPU-second (the CPU time of the process and
its workers over the measured batches) and the reading process's own CPU-ms an image (what the
training process pays to receive its batches), on the training split repeated --times times
(experiments/enlarge_prepared.py: an epoch of real length, every image decoded again). `--code
DIR` measures another checkout's readers (e.g. a git worktree of an earlier commit) in the
same rounds. Optionally a short CPU training run then reports how long the loop waited for data.

Run:
    python experiments/benchmark_input.py --path ../shared/data/imagenet-sample-500 \
        --json runs/input_imagenet_sample.json
    python experiments/benchmark_input.py --path ../shared/data/imagenet-sample-500 --readers \
        --times 20 --batches 200 --warmup 20 \
        --json docs/results/input_readers_imagenet_sample_500.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the project's library: this checkout's; a --measure process given `--code DIR`, that one's
CODE = (sys.argv[sys.argv.index("--code") + 1] if "--code" in sys.argv and "--measure" in sys.argv
        else str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, CODE)
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

# not in the reading workers, which import this file again (spawned), nor in a --measure
# process, which imports what its reader needs: TensorFlow would cost them seconds and memory
if __name__ == "__main__" and "--measure" not in sys.argv:
    import tensorflow as tf  # noqa: E402
    import tensorflow_datasets as tfds  # noqa: E402

    from alexnet_jax.common import provenance  # noqa: E402
    from alexnet_jax.data import catalog, file_survey, pipeline  # noqa: E402
    from alexnet_jax.data.augmentation import preprocessing_from_config  # noqa: E402
    from alexnet_jax.training.records.metrics_writer import read_records  # noqa: E402
    from configs.imagenette import get_config  # noqa: E402


def use_cpus(count: int) -> None:
    """Pin every thread of this process (and those it starts) to the first `count` CPUs, so a
    figure per core is measured on that many cores, whatever else TensorFlow starts."""
    cpus = set(sorted(os.sched_getaffinity(0) | ALL_CPUS)[:count])
    for task in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(task), cpus)
        except OSError:
            pass  # a thread that just ended


ALL_CPUS = set(os.sched_getaffinity(0))


def images_per_sec(source, prep, threads: int, batches: int, batch: int) -> tuple[float, float]:
    """(images/s in steady state, seconds to an epoch's first batch). Epochs follow each other
    (a small set is seen many times); each epoch's first batch waits for the pipeline to be
    built and its shuffle buffer to fill, which a real epoch (ImageNet: 10,000 batches) pays
    once, so it is timed apart."""
    use_cpus(threads)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    options.threading.max_intra_op_parallelism = 1
    return timed_epochs(lambda epoch: tfds.as_numpy(pipeline.train_dataset(
        source, prep, batch, seed=0, epoch=epoch, shuffle_buffer=1024).with_options(options)),
        batches, batch)


def timed_epochs(epoch_batches, batches: int, batch: int) -> tuple[float, float]:
    """(images/s over `batches` steady batches, mean seconds to an epoch's first batch) of
    the epochs epoch_batches(0), epoch_batches(1), ... read one after the other."""
    steady, starts, epoch = [], [], 0
    while len(steady) < batches:
        start = time.perf_counter()
        for index, _ in enumerate(epoch_batches(epoch)):
            now = time.perf_counter()
            (starts if index == 0 else steady).append(now - start)
            start = now
        epoch += 1
    steady = steady[:batches]
    return batch * len(steady) / sum(steady), float(np.mean(starts[1:] or starts))


def cpu_seconds() -> float:
    """CPU time of this process and of every process it started (Grain's workers), so far."""
    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return total


def images_and_cpu(batches_of_epoch, batches: int, batch: int, warmup: int = 1
                   ) -> tuple[float, float, float]:
    """(images/s, images per CPU-second of this process and its workers, this process's own
    CPU-ms an image) over `batches` batches of the epochs batches_of_epoch(0), (1), ..., after
    `warmup` batches (the pipeline's start, and the batches its workers made while starting).
    Each batch is dropped as it comes, as a training loop does."""
    def stream():
        epoch = 0
        while True:
            yield from batches_of_epoch(epoch)
            epoch += 1

    it = stream()
    for _ in range(warmup):
        next(it)
    me = psutil.Process()
    start, cpu, own = time.perf_counter(), cpu_seconds(), sum(me.cpu_times()[:2])
    for _ in range(batches):
        next(it)
    wall, used = time.perf_counter() - start, cpu_seconds() - cpu
    own_ms = 1000 * (sum(me.cpu_times()[:2]) - own) / (batch * batches)
    return batch * batches / wall, batch * batches / used, own_ms


# --readers: each reader measured in a process of its own, pinned to `cpus` cores
READERS = {
    "tf.data, 1 core": {"kind": "tf.data", "cpus": 1},
    "in-process, 1 thread": {"kind": "prepared", "workers": 0, "cpus": 1},
    "1 worker process": {"kind": "prepared", "workers": 1, "cpus": None},
    "2 worker processes": {"kind": "prepared", "workers": 2, "cpus": None},
}


def prepare_reader_data(config, args) -> Path:
    """The same JPEG squares as TFRecord (tf.data) and ArrayRecord (the TensorFlow-free reader)
    folders, their training split repeated args.times times, and the preprocessing, under one
    folder (`--root`, made once and reused)."""
    import pickle  # noqa: PLC0415

    from enlarge_prepared import enlarge  # noqa: PLC0415

    root = Path(args.root)
    if (root / "prep.pkl").exists():
        return root
    with config.unlocked():
        config.data.prepared, config.data.prepared_format = "256", "jpeg"
    tf_source = catalog.open_dataset(config)
    prep = preprocessing_from_config(config, tf_source)
    with config.unlocked():
        config.data.file_format = "array_record"
    array_folder = catalog.open_dataset(config, preparing=True).folder
    enlarge(Path(tf_source.builder.data_dir), root / "tfrecord", args.times)
    enlarge(array_folder, root / "array_record", args.times)
    (root / "prep.pkl").write_bytes(pickle.dumps(prep))
    return root


def measure_reader(name: str, args) -> dict:
    """One reader's figures, in this process (started by compare_readers)."""
    import pickle  # noqa: PLC0415

    reader, root = READERS[name], Path(args.root)
    prep = pickle.loads((root / "prep.pkl").read_bytes())
    if reader["cpus"]:
        use_cpus(reader["cpus"])
    if reader["kind"] == "tf.data":
        import tensorflow as tf  # noqa: PLC0415
        import tensorflow_datasets as tfds  # noqa: PLC0415

        from alexnet_jax.data import pipeline, sources  # noqa: PLC0415

        builder = tfds.builder_from_directory(root / "tfrecord")
        big = sources.Source("benchmark", builder, "train", "val", (), {},
                             prepared_size=256, prepared_storage="jpeg")
        options = tf.data.Options()
        options.threading.private_threadpool_size = reader["cpus"]
        options.threading.max_intra_op_parallelism = 1
        epochs = lambda epoch: tfds.as_numpy(pipeline.train_dataset(  # noqa: E731
            big, prep, args.batch, seed=0, epoch=epoch).with_options(options))
    else:
        from alexnet_jax.data.feeding import Shard  # noqa: PLC0415
        from alexnet_jax.data.prepared_folder import PreparedFolderSource  # noqa: PLC0415

        folder = PreparedFolderSource(str(root / "array_record"), 256, 0, reader["workers"])
        epochs = lambda epoch: folder.train_batches(  # noqa: E731
            prep, args.batch, 0, epoch, 0, Shard(0, 1))
    rate, per_cpu, own = images_and_cpu(epochs, args.batches, args.batch, args.warmup)
    return {"reader": name, "images_per_sec": rate, "images_per_cpu_second": per_cpu,
            "trainer_cpu_ms_per_image": own}


def compare_readers(config, args) -> list[dict]:
    """tf.data and the TensorFlow-free reader (in-process, 1 and 2 workers) on the same JPEG
    squares, each in a process of its own, alternated over args.rounds rounds; with --code,
    the same readers of another checkout of the project too (its library, this script)."""
    root = prepare_reader_data(config, args)
    trees = {"": None}
    if args.code:
        trees[f" [{args.code_name}]"] = args.code
    runs: dict[str, list[dict]] = {}
    for round_index in range(args.rounds):
        for name in READERS:
            for label, tree in trees.items():
                if label and READERS[name]["kind"] == "tf.data":
                    continue   # tf.data is the same code in both trees
                command = [sys.executable, __file__, "--measure", name, "--root", str(root),
                           "--batches", str(args.batches), "--batch", str(args.batch),
                           "--warmup", str(args.warmup)] + (["--code", tree] if tree else [])
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                if done.returncode or not lines:
                    raise SystemExit(f"{name}{label} failed:\n{done.stderr[-3000:]}")
                leaked = "leaked shared_memory" in done.stderr
                figure = {**json.loads(lines[-1]), "reader": name + label,
                          "leak_warning": leaked}
                runs.setdefault(name + label, []).append(figure)
                print(f"  round {round_index + 1}: {name + label:34s} "
                      f"{figure['images_per_sec']:6.0f} images/s "
                      f"{figure['images_per_cpu_second']:6.0f} per CPU-second  trainer "
                      f"{figure['trainer_cpu_ms_per_image']:.4f} CPU-ms an image"
                      + ("  LEAK WARNING" if leaked else ""), flush=True)
    results = []
    print(f"medians of {args.rounds} rounds [range]:")
    for name, figures in runs.items():
        row = {"reader": name, "rounds": figures}
        for key in ("images_per_sec", "images_per_cpu_second", "trainer_cpu_ms_per_image"):
            values = [f[key] for f in figures]
            row[key] = float(np.median(values))
            row[key + "_range"] = [float(min(values)), float(max(values))]
        row["leak_warnings"] = sum(f["leak_warning"] for f in figures)
        results.append(row)
        print(f"  {name:34s} {row['images_per_sec']:6.0f} images/s "
              f"[{row['images_per_sec_range'][0]:.0f}-{row['images_per_sec_range'][1]:.0f}]  "
              f"{row['images_per_cpu_second']:6.0f} per CPU-second "
              f"[{row['images_per_cpu_second_range'][0]:.0f}-"
              f"{row['images_per_cpu_second_range'][1]:.0f}]  trainer "
              f"{row['trainer_cpu_ms_per_image']:.4f} CPU-ms an image", flush=True)
    return results


def train_only_tree(path: Path) -> Path:
    """A tree whose train/ and val/ are both the given tree's train/ (links): the benchmark
    reads only training images, and a tree like imagenet-sample-500 has disjoint val classes."""
    root = Path(tempfile.gettempdir()) / f"alexnet_benchmark_{path.resolve().name}"
    root.mkdir(exist_ok=True)
    for split in ("train", "val"):
        link = root / split
        if not link.is_symlink():
            link.symlink_to((path / "train").resolve())
    return root


def training_data_wait(config, steps: int, batch: int) -> tuple[float, float]:
    from alexnet_jax.training import train  # noqa: PLC0415

    with config.unlocked():
        config.train.batch_size = batch
        config.train.num_steps = steps
        config.train.log_every_steps = 2
        config.train.final_eval_views = ()
        config.train.checkpoint_every_steps = 10 ** 9
    with tempfile.TemporaryDirectory() as workdir:
        train.train_and_evaluate(config, workdir)
        lines = [r for r in read_records(Path(workdir)) if r.get("split") == "train"][1:]
    return (float(np.mean([r["data_wait_fraction"] for r in lines])),
            float(np.mean([r["images_per_sec"] for r in lines])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", default="../shared/data/imagenette2-224",
                        help="an ImageFolder tree (train/<class>/*)")
    parser.add_argument("--formats", default="original,prepared",
                        help="which of original, prepared to measure")
    parser.add_argument("--storage", default="jpeg",
                        help="prepared storage(s), comma-separated: jpeg, jpeg444, raw")
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="measurements; the median counts")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", default="", help="e.g. 1,2 (default: 1 and all cores)")
    parser.add_argument("--train-steps", type=int, default=0,
                        help="also a CPU training run of this many steps (0: none)")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--readers", action="store_true",
                        help="compare tf.data and the TensorFlow-free reader (Grain, 1 and 2 "
                        "workers) on the same prepared JPEG squares")
    parser.add_argument("--rounds", type=int, default=5,
                        help="--readers: rounds, each reader once a round in a new process")
    parser.add_argument("--warmup", type=int, default=10,
                        help="--readers: batches read before the measured ones")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "alexnet_readers"),
                        help="--readers: where the repeated squares are made once and kept")
    parser.add_argument("--code", help="--readers: also measure the readers of this checkout "
                        "of the project (e.g. a git worktree of an earlier commit)")
    parser.add_argument("--code-name", default="other code",
                        help="how the table names the --code checkout's readers")
    parser.add_argument("--measure", choices=sorted(READERS), help=argparse.SUPPRESS)
    parser.add_argument("--times", type=int, default=10,
                        help="--readers: the training split repeated this many times")
    args = parser.parse_args()
    if args.measure:   # one reader, in a process of its own (compare_readers starts it)
        print(json.dumps(measure_reader(args.measure, args)), flush=True)
        return

    cores = os.cpu_count()
    threads = [int(t) for t in args.threads.split(",")] if args.threads else sorted({1, cores})
    config = get_config()
    with config.unlocked():
        config.data.name, config.data.path = "folder", str(train_only_tree(Path(args.path)))
        config.data.prepared_quality = args.quality
    surveyed = file_survey.survey(Path(args.path) / "train")
    print(f"read {surveyed.describe()}; -> 256 square -> 224 crops; batch {args.batch}; "
          f"host CPUs {cores}", flush=True)
    results = []
    storages = args.storage.split(",")
    formats = [] if args.readers else args.formats.split(",")
    if args.readers:
        results = compare_readers(config, args)
    for fmt, storage in ([("original", None)] if "original" in formats else []) + (
            [("prepared", s) for s in storages] if "prepared" in formats else []):
        with config.unlocked():
            config.data.prepared = "none" if fmt == "original" else "256"
            config.data.prepared_format = storage or "jpeg"
        source = catalog.open_dataset(config)
        for augmentation, lighting in (("full", "cuda_convnet2"), ("no_lighting", "none")):
            with config.unlocked():
                config.data.lighting = lighting
            prep = preprocessing_from_config(config, source)
            readers = [("tf.data", images_per_sec)]
            for (reader, measure), count in itertools.product(readers, threads):
                repeats = [measure(source, prep, count, args.batches, args.batch)
                           for _ in range(args.repeats)]
                rate = float(np.median([r for r, _ in repeats]))
                epoch_start = float(np.median([e for _, e in repeats]))
                name = fmt if storage is None else f"{fmt} ({storage}"
                name += "" if storage is None else (")" if storage == "raw"
                                                    else f" q{args.quality})")
                name += f" {reader}"
                print(f"  {name:32s} {augmentation:12s} {count} thread(s): {rate:7.0f} images/s "
                      f"= {rate / count:6.0f} per thread (epoch start {epoch_start:.2f} s)",
                      flush=True)
                results.append({"format": fmt, "storage": storage, "reader": reader,
                                "augmentation": augmentation,
                                "threads": count, "images_per_sec": round(rate, 1),
                                "images_per_sec_per_thread": round(rate / count, 1),
                                "repeats": [round(r, 1) for r, _ in repeats],
                                "epoch_start_s": round(epoch_start, 3)})
    report = {"path": args.path, "files": surveyed.files,
              "median_width": surveyed.median_width, "median_height": surveyed.median_height,
              "mean_file_kib": round(surveyed.mean_bytes / 1024, 1), "host_cpus": cores,
              "batch": args.batch, "results": results,
              "provenance": provenance.provenance()}
    if args.train_steps:
        with config.unlocked():
            config.data.lighting = "cuda_convnet2"
        wait, rate = training_data_wait(config, args.train_steps, args.train_batch)
        print(f"  CPU training (full AlexNet, batch {args.train_batch}, prepared, full "
              f"augmentation): {rate:.1f} images/s, loop waited for data {100 * wait:.2f}% of "
              "the time")
        report["training"] = {"images_per_sec": rate, "data_wait_fraction": wait}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
