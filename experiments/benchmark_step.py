"""Training-step throughput of the paper's AlexNet (batch 128, 224x224, float32 unless asked).

Times the jitted training step (forward, backward, paper momentum update) on fixed device
batches, so the input pipeline is not measured here (see benchmark_input.py). For each way of
computing the own-column convolutions (`split`: one convolution per column; `grouped`: one
convolution with feature_group_count=2) it prints images/s; on CPU it also times an independent
PyTorch implementation of the same network in the same process and prints the ratio.

Run:
    python experiments/benchmark_step.py                      # all devices, both impls
    python experiments/benchmark_step.py --variants split,lrn_slices,space_to_depth,fast --layers
    python experiments/benchmark_step.py --steps 3 --torch    # add the PyTorch reference
    python experiments/benchmark_step.py --dtype bfloat16     # mixed precision (GPU)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from alexnet_jax.common import host_memory, provenance, sharding  # noqa: E402
from alexnet_jax.model import build, compiler  # noqa: E402
from alexnet_jax.training import steps  # noqa: E402
from alexnet_jax.training.state import build_train_state  # noqa: E402
from configs.default import get_config  # noqa: E402


def jax_stepper(overrides: dict, dtype: str, batch: int, mesh_model: int):
    """The jitted training step with the model config `overrides` (e.g. lrn_impl): (a function
    that times `n` steps and returns their seconds, the mesh). Its first call compiles."""
    config = get_config()
    with config.unlocked():
        for key, value in overrides.items():
            config.model[key] = value
        config.model.dtype = dtype
        config.mesh.model = mesh_model
    mesh = build.build_mesh(config)
    graphdef, params, tx, opt_state = build_train_state(config, 1000, mesh)
    with jax.set_mesh(mesh):
        train_step = steps.make_train_step(graphdef, tx, steps.state_shardings(params, opt_state),
                                           jax.random.key(0),
                                           compiler_options=build.compiler_options(config))
        rng = np.random.RandomState(0)
        put = lambda x: jax.device_put(x, sharding.sharding_for(mesh, "batch"))  # noqa: E731
        images = put(rng.uniform(-100, 100, (batch, 224, 224, 3)).astype(np.float32))
        labels = put(rng.randint(0, 1000, batch).astype(np.int32))
    state = {"params": params, "opt_state": opt_state, "step": 0}

    def run(n: int) -> float:
        with jax.set_mesh(mesh):
            params, opt_state = state["params"], state["opt_state"]
            jax.block_until_ready(params)
            start = time.perf_counter()
            for _ in range(n):
                params, opt_state, metrics = train_step(params, opt_state, images, labels,
                                                        jnp.float32(0.01),
                                                        jnp.int32(state["step"]))
                state["step"] += 1
            jax.block_until_ready((params, metrics))
            elapsed = time.perf_counter() - start
        state["params"], state["opt_state"] = params, opt_state
        return elapsed

    return run, sharding.describe(mesh)


def forward_backward_ms(function, *args, steps_timed: int = 10,
                        compiler_options: dict[str, str] | None = None) -> float:
    """Milliseconds of one jitted forward + backward pass of `function` (grads of all args),
    compiled with `compiler_options`."""
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(function(*a).astype(jnp.float32)),
                            argnums=tuple(range(len(args)))), compiler_options=compiler_options)
    jax.block_until_ready(grad(*args))
    start = time.perf_counter()
    for _ in range(steps_timed):
        out = grad(*args)
    jax.block_until_ready(out)
    return 1e3 * (time.perf_counter() - start) / steps_timed


def layer_table(batch: int, dtype: str, steps_timed: int,
                cpu_conv_impl: str) -> list[tuple[str, str, float]]:
    """Forward + backward of each piece of the network alone (both columns on one device, the
    paper's widths), compiled with `cpu_conv_impl`'s options (model/compiler.py): (piece,
    implementation, milliseconds)."""
    from alexnet_jax.model import compiler, layers  # noqa: PLC0415
    from alexnet_jax.training import optim  # noqa: PLC0415

    timed = partial(forward_backward_ms, compiler_options=compiler.compiler_options(
        cpu_conv_impl, jax.default_backend()))

    compute = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[dtype]
    rng = np.random.RandomState(0)
    arr = lambda *shape, scale=1.0: jnp.asarray(  # noqa: E731
        rng.normal(0, scale, shape).astype(np.float32)).astype(compute)
    lrn, pad1 = layers.LRNParams(), layers.conv1_padding(224, "cuda_convnet")
    image, k1 = arr(batch, 224, 224, 3, scale=50), arr(11, 11, 3, 96, scale=0.01)
    x1, x2 = arr(batch, 55, 55, 96), arr(batch, 27, 27, 256)
    k2, p1 = arr(2, 5, 5, 48, 128, scale=0.01), arr(batch, 27, 27, 96)
    p2, k3 = arr(batch, 13, 13, 256), arr(3, 3, 256, 384, scale=0.01)
    x3, k4 = arr(batch, 13, 13, 384), arr(2, 3, 3, 192, 192, scale=0.01)
    k5, x5 = arr(2, 3, 3, 192, 128, scale=0.01), arr(batch, 13, 13, 256)
    f6, w6 = arr(batch, 9216), arr(2, 9216, 2048, scale=0.01)   # fc6, fc7: a kernel a column
    w7, w8 = arr(2, 4096, 2048, scale=0.01), arr(4096, 1000, scale=0.01)
    relu_lrn = lambda impl: lambda x: layers.local_response_norm(  # noqa: E731
        jax.nn.relu(x), 2, lrn, impl)
    rows = []
    for grads in ("xla", "matmul"):   # the kernels' gradients: XLA's, or matrix products
        rows += [(f"conv1 ({grads} kernel grad)", "direct", timed(
                     lambda x, k: layers.conv(x, k, 4, pad1, grad_impl=grads), image, k1,
                     steps_timed=steps_timed)),
                 (f"conv1 ({grads} kernel grad)", "space_to_depth", timed(
                     lambda x, k: layers.conv_space_to_depth(x, k, 4, pad1, grads), image, k1,
                     steps_timed=steps_timed))]
    for impl in ("matmul", "slices"):
        rows.append(("ReLU + LRN1", impl, timed(relu_lrn(impl), x1,
                                                               steps_timed=steps_timed)))
        rows.append(("ReLU + LRN2", impl, timed(relu_lrn(impl), x2,
                                                               steps_timed=steps_timed)))
    pool = lambda x: layers.max_pool(x, True)  # noqa: E731
    rows += [(name, "reduce_window", timed(pool, x, steps_timed=steps_timed))
             for name, x in (("pool1", x1), ("pool2", x2), ("pool5", x5))]
    for impl, grads in (("split", "xla"), ("grouped", "xla"), ("split", "matmul")):
        own = lambda x, k, pad: layers.conv_own_column(x, k, 1, pad, impl, grads)  # noqa: E731
        rows += [(f"conv{n} ({grads} kernel grad)", impl, timed(
                     lambda x, k: own(x, k, pad), x, k, steps_timed=steps_timed))
                 for n, pad, x, k in ((2, ((2, 2), (2, 2)), p1, k2), (4, ((1, 1), (1, 1)), x3, k4),
                                      (5, ((1, 1), (1, 1)), x3, k5))]
    for grads in ("xla", "matmul"):
        rows.append((f"conv3 ({grads} kernel grad)", "direct", timed(
            lambda x, k: layers.conv(x, k, 1, ((1, 1), (1, 1)), grad_impl=grads), p2, k3,
            steps_timed=steps_timed)))
    dense = layers.dense_shared_input
    rows.append(("fc6 + fc7 + fc8", "batched over columns", timed(
        lambda x, a, b, c: jax.nn.relu(dense(jax.nn.relu(dense(x, a)), b)) @ c, f6, w6, w7, w8,
        steps_timed=steps_timed)))
    params = {"w": jnp.zeros((60_965_224,), jnp.float32)}
    tx = optim.create_optimizer(0.9, 5e-4, "paper", False, 0.01)
    state = tx.init(params)
    update = jax.jit(lambda p, s: tx.update(p, s, p))
    jax.block_until_ready(update(params, state))
    start = time.perf_counter()
    for _ in range(steps_timed):
        out = update(params, state)
    jax.block_until_ready(out)
    rows.append(("SGD update of 61 M parameters", "optax", 1e3 * (time.perf_counter() - start)
                 / steps_timed))
    return rows


def torch_stepper(batch: int):
    """PyTorch's training step of the same network (experiments/torch_alexnet.py): a function
    that times `n` steps and returns their seconds."""
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

    def run(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            step()
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds, each timing every variant (and PyTorch) in turn")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (compilation)")
    parser.add_argument("--variants", default="split,grouped",
                        help="comma-separated model variants to time (VARIANTS): split, grouped "
                        "(column convolutions), lrn_slices, space_to_depth, fast (both), "
                        "xla_grads, ynnpack_convs; none, with --torch: PyTorch's step alone")
    parser.add_argument("--layers", action="store_true",
                        help="also the per-layer forward+backward table")
    parser.add_argument("--layer-libraries", default="eigen",
                        help="on CPU, the per-layer table for each of these convolution "
                        "libraries (model.cpu_conv_impl: eigen, ynnpack)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--mesh-model", type=int, default=-1, help="size of the model axis")
    parser.add_argument("--torch", action="store_true", help="also time PyTorch (CPU only)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    device = jax.devices()[0]
    on_cpu = device.platform == "cpu"
    host, memory = provenance.host_processor(), host_memory.state()
    print(f"JAX {jax.__version__} on {jax.device_count()} x {device.device_kind} "
          f"({device.platform}); batch {args.batch}, 224x224, {args.dtype}; {args.rounds} "
          f"rounds of {args.steps} timed steps after {args.warmup} warm-up; host CPUs {os.cpu_count()}, "
          f"{host['model']} ({host['instruction_set']}); host memory {memory}",
          flush=True)
    results = {"device": device.device_kind, "platform": device.platform, "host": host,
               "host_memory": memory,
               "num_devices": jax.device_count(), "batch": args.batch, "dtype": args.dtype,
               "jax": jax.__version__, "rounds": args.rounds, "images_per_sec": {},
               "images_per_sec_by_round": {}}
    variants = [name for name in args.variants.split(",") if name and name != "none"]
    if not variants and not args.torch:
        parser.error("--variants=none times nothing without --torch")
    steppers = {}
    for variant in variants:
        steppers[f"jax_{variant}"], results["mesh"] = jax_stepper(
            VARIANTS[variant], args.dtype, args.batch, args.mesh_model)
    if args.torch:
        import torch  # noqa: PLC0415
        steppers["torch"] = torch_stepper(args.batch)
        results["torch"] = torch.__version__
    # Warm-up alternates the contenders too: each then has grown its share of the one heap the
    # process's allocator keeps (common/host_memory.py) beside the others', so a timed round
    # does not pay for memory another contender's warm-up took (JAX's first round after
    # PyTorch's warm-up ran at half speed, docs/performance.md).
    for _ in range(args.warmup):
        for run in steppers.values():
            run(1)
    # Rounds alternate every contender, so a slow spell of the machine falls on all of them.
    by_round = {name: [] for name in steppers}
    faults = {name: [] for name in steppers}   # minor page faults a step (the whole process's)
    for round_index in range(args.rounds):
        for name, run in steppers.items():
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            by_round[name].append(args.batch * args.steps / run(args.steps))
            faults[name].append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                                 - faults_before) / args.steps)
        print(f"  round {round_index + 1}: " + ", ".join(
            f"{name} {rates[-1]:.1f}" for name, rates in by_round.items()) + " images/s",
            flush=True)
    results["images_per_sec_by_round"] = by_round
    results["minor_faults_per_step_by_round"] = faults
    for name, rates in by_round.items():
        results["images_per_sec"][name] = float(np.median(rates))
        print(f"  {name:18s} {VARIANTS.get(name[4:], '')} median {np.median(rates):9.1f} "
              f"images/s [{min(rates):.1f}-{max(rates):.1f}], "
              f"{np.median(faults[name]):,.0f} minor page faults a step", flush=True)
    if args.torch:
        print(f"  torch {results['torch']} ({torch.get_num_threads()} threads, grouped convs)")
        for variant in variants:
            ratios = [j / t for j, t in zip(by_round[f"jax_{variant}"], by_round["torch"])]
            results[f"ratio_jax_{variant}_to_torch"] = float(np.median(ratios))
            results[f"ratio_jax_{variant}_to_torch_by_round"] = ratios
            print(f"  ratio jax {variant} / torch, same round: median "
                  f"{np.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
    if args.layers:
        rows = [(piece, f"{impl}, {library}" if on_cpu else impl, ms)
                for library in (args.layer_libraries.split(",") if on_cpu
                                else [compiler.NOT_ON_CPU])
                for piece, impl, ms in layer_table(args.batch, args.dtype, args.steps, library)]
        results["layers_ms"] = [{"piece": p, "impl": i, "ms": ms} for p, i, ms in rows]
        print("| piece | implementation | forward + backward (ms) |\n|---|---|---|")
        for piece, impl, ms in rows:
            print(f"| {piece} | {impl} | {ms:.2f} |")
    results["peak_resident_gb"] = host_memory.peak_resident_gb()
    results["provenance"] = provenance.provenance()  # the commit, versions and platform
    print(f"  peak resident memory of the process: {results['peak_resident_gb']:.1f} GB")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


VARIANTS = {  # name -> model config overrides (the rest: auto, the platform's fastest)
    "split": {"column_impl": "split"},
    # the CPU's formulations before 2026-12-07: conv1 direct, XLA's kernel gradients
    "xla_grads": {"column_impl": "split", "conv1_impl": "direct", "conv_grad_impl": "xla"},
    # the CPU's convolutions as JAX 0.10 leaves them, to YNNPACK (the trainer before 2026-12-08)
    "ynnpack_convs": {"column_impl": "split", "cpu_conv_impl": "ynnpack"},
    "grouped": {"column_impl": "grouped"},
    "lrn_slices": {"lrn_impl": "slices"},
    "space_to_depth": {"conv1_impl": "space_to_depth"},
    "fast": {"lrn_impl": "slices", "conv1_impl": "space_to_depth"},
}


if __name__ == "__main__":
    # measured as the trainer runs: restarted with the host allocator it would have
    # (common/host_memory.py; the PyTorch reference shares the process, so it runs with it
    # too); GLIBC_TUNABLES=glibc.malloc.hugetlb=0 measures glibc's default
    host_memory.restart_with_host_allocator()
    main()
