"""Training-step throughput of the paper's AlexNet (batch 128, 224x224, float32 unless asked).

Times the jitted training step (forward, backward, paper momentum update) on fixed device
batches, so the input pipeline is not measured here (see benchmark_input.py). For each way of
computing the own-column convolutions (`split`: one convolution per column; `grouped`: one
convolution with feature_group_count=2) it prints images/s; on CPU it also times an independent
PyTorch implementation of the same network in the same process and prints the ratio.

Run:
    python experiments/benchmark_step.py                      # all devices, both impls
    python experiments/benchmark_step.py --steps 3 --torch    # add the PyTorch reference
    python experiments/benchmark_step.py --dtype bfloat16     # mixed precision (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax import build, sharding, steps  # noqa: E402
from configs.default import get_config  # noqa: E402


def jax_images_per_sec(column_impl: str, dtype: str, batch: int, steps_timed: int,
                       warmup: int, mesh_model: int) -> tuple[float, dict]:
    config = get_config()
    with config.unlocked():
        config.model.column_impl = column_impl
        config.model.dtype = dtype
        config.mesh.model = mesh_model
    mesh = build.build_mesh(config)
    graphdef, params, tx, opt_state = build.build_train_state(config, 1000, mesh)
    with jax.set_mesh(mesh):
        train_step = steps.make_train_step(graphdef, tx, steps.state_shardings(params, opt_state),
                                           jax.random.key(0))
        rng = np.random.RandomState(0)
        put = lambda x: jax.device_put(x, sharding.sharding_for(mesh, "batch"))  # noqa: E731
        images = put(rng.uniform(-100, 100, (batch, 224, 224, 3)).astype(np.float32))
        labels = put(rng.randint(0, 1000, batch).astype(np.int32))
        lr = jnp.float32(0.01)
        for i in range(warmup):
            params, opt_state, metrics = train_step(params, opt_state, images, labels, lr,
                                                    jnp.int32(i))
        jax.block_until_ready((params, metrics))
        start = time.perf_counter()
        for i in range(steps_timed):
            params, opt_state, metrics = train_step(params, opt_state, images, labels, lr,
                                                    jnp.int32(warmup + i))
        jax.block_until_ready((params, metrics))
        elapsed = time.perf_counter() - start
    return batch * steps_timed / elapsed, sharding.describe(mesh)


def torch_images_per_sec(batch: int, steps_timed: int, warmup: int) -> float:
    import torch  # noqa: PLC0415

    from experiments.torch_alexnet import TorchAlexNet  # noqa: PLC0415

    torch.manual_seed(0)
    model = TorchAlexNet().train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    images = torch.empty(batch, 3, 224, 224).uniform_(-100, 100)
    labels = torch.randint(0, 1000, (batch,))

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps_timed):
        step()
    return batch * steps_timed / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--impls", default="split,grouped")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--mesh-model", type=int, default=-1, help="size of the model axis")
    parser.add_argument("--torch", action="store_true", help="also time PyTorch (CPU only)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(f"JAX {jax.__version__} on {jax.device_count()} x {device.device_kind} "
          f"({device.platform}); batch {args.batch}, 224x224, {args.dtype}; "
          f"{args.steps} timed steps after {args.warmup} warm-up; "
          f"host CPUs {os.cpu_count()}", flush=True)
    results = {"device": device.device_kind, "platform": device.platform,
               "num_devices": jax.device_count(), "batch": args.batch, "dtype": args.dtype,
               "jax": jax.__version__, "images_per_sec": {}}
    for impl in args.impls.split(","):
        rate, mesh = jax_images_per_sec(impl, args.dtype, args.batch, args.steps, args.warmup,
                                        args.mesh_model)
        results["images_per_sec"][f"jax_{impl}"] = rate
        results["mesh"] = mesh
        print(f"  jax  column_impl={impl:8s} mesh={mesh}: {rate:9.1f} images/s", flush=True)
    if args.torch:
        import torch  # noqa: PLC0415
        rate = torch_images_per_sec(args.batch, args.steps, args.warmup)
        results["images_per_sec"]["torch"] = rate
        print(f"  torch {torch.__version__} ({torch.get_num_threads()} threads, grouped convs): "
              f"{rate:9.1f} images/s", flush=True)
        for impl in args.impls.split(","):
            ratio = results["images_per_sec"][f"jax_{impl}"] / rate
            results[f"ratio_jax_{impl}_to_torch"] = ratio
            print(f"  ratio jax {impl} / torch: {ratio:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
