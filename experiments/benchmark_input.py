"""Throughput of the host input pipeline, and how long training waits for it.

1. Augmented training batches per second (decode, resize to 256, central square, mean image,
   random 224 crop, flip, with and without PCA lighting) on Imagenette's 224-pixel JPEGs, with
   the tf.data pipeline limited to 1 thread and to all host cores; printed per core.
2. A short CPU training run of the full network with the full augmentation, reporting the
   fraction of wall time the training loop waited for its next batch (an upper bound on the
   time the devices waited for data), from the run's metrics.jsonl.

Run:
    python experiments/benchmark_input.py --path ../shared/data/imagenette2-224
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from alexnet_jax.data import file_survey, pipeline, sources  # noqa: E402
from alexnet_jax.metrics_writer import read_records  # noqa: E402
from configs.imagenette import get_config  # noqa: E402


def pipeline_images_per_sec(source, prep, threads: int, batches: int, batch: int) -> float:
    dataset = pipeline.train_dataset(source, prep, batch, seed=0, epoch=0)
    options = tf.data.Options()
    options.threading.private_threadpool_size = threads
    iterator = iter(tfds.as_numpy(dataset.with_options(options)))
    next(iterator)  # warm-up: file opening, shuffle buffer fill
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch / (time.perf_counter() - start)


def training_data_wait(config, steps: int, batch: int) -> tuple[float, float]:
    from alexnet_jax import train  # noqa: PLC0415

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
                        help="ImageFolder copy of Imagenette")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=12)
    parser.add_argument("--train-batch", type=int, default=32)
    args = parser.parse_args()

    config = get_config()
    with config.unlocked():
        config.data.name, config.data.path = "imagenette", args.path
    source = sources.open_source("imagenette", args.path, config.data.data_dir)
    cores = os.cpu_count()
    print(f"read {file_survey.survey(Path(args.path) / 'train').describe()}; "
          f"{source.num_examples('train')} prepared; -> 256 square -> 224 crops; batch "
          f"{args.batch}; host CPUs {cores}", flush=True)
    for lighting in ("cuda_convnet2", "none"):
        with config.unlocked():
            config.data.lighting = lighting
        prep = pipeline.preprocessing_from_config(config, source)
        for threads in sorted({1, cores}):
            rate = pipeline_images_per_sec(source, prep, threads, args.batches, args.batch)
            print(f"  mean image + crop + flip, lighting={lighting:13s} {threads} thread(s): "
                  f"{rate:7.0f} images/s = {rate / threads:6.0f} per core", flush=True)
    with config.unlocked():
        config.data.lighting = "cuda_convnet2"
    wait, rate = training_data_wait(config, args.train_steps, args.train_batch)
    print(f"  CPU training (full AlexNet, batch {args.train_batch}, full augmentation): "
          f"{rate:.1f} images/s, loop waited for data {100 * wait:.2f}% of the time")


if __name__ == "__main__":
    main()
