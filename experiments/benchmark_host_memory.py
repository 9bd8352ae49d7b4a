"""The training step with and without glibc's huge pages (alexnet_jax/common/host_memory.py).

The allocator's tunables are fixed when a process starts, so each setting is its own process of
`benchmark_step.py --torch` (JAX's step and the PyTorch reference in one process), the two
settings alternated over rounds so that a slow spell of the machine falls on both:

    python experiments/benchmark_host_memory.py --rounds 3 --steps 2 \
        [--json docs/results/step_cpu_host_memory.json]

Prints, per round and as medians [ranges]: each framework's images/s and minor page faults a
step under glibc's default (`glibc.malloc.hugetlb=0`) and with huge pages (`=1`), the ratio
huge pages / default of each framework (adjacent processes), and JAX / PyTorch in each process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from alexnet_jax.common import host_memory, provenance  # noqa: E402

SETTINGS = {"default": f"{host_memory.HUGE_PAGES_TUNABLE}=0",
            "huge_pages": f"{host_memory.HUGE_PAGES_TUNABLE}=1"}


def one_process(setting: str, args: argparse.Namespace) -> dict:
    """benchmark_step.py's results for one process run with the glibc tunable `setting`."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "step.json"
        environment = {**os.environ, host_memory.TUNABLES_VARIABLE: setting}
        subprocess.run([sys.executable, str(REPO / "experiments" / "benchmark_step.py"),
                        "--batch", str(args.batch), "--steps", str(args.steps), "--warmup",
                        str(args.warmup), "--variants", "split", "--torch", "--json",
                        str(output)], env=environment, check=True, stdout=subprocess.DEVNULL)
        return json.loads(output.read_text())


def summary(values: list[float]) -> str:
    return f"{np.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps a process")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    print(f"host {provenance.host_processor()}, THP mode "
          f"{host_memory.transparent_huge_pages_mode()}, glibc {host_memory.glibc_version()}; "
          f"{args.rounds} rounds, batch {args.batch}, {args.steps} timed steps a process",
          flush=True)
    runs = {name: [] for name in SETTINGS}
    for round_index in range(args.rounds):
        for name, setting in SETTINGS.items():
            result = one_process(setting, args)
            runs[name].append(result)
            print(f"  round {round_index + 1}, {name:10s}: JAX "
                  f"{result['images_per_sec']['jax_split']:.1f} img/s "
                  f"({np.median(result['minor_faults_per_step_by_round']['jax_split']):,.0f} "
                  f"faults a step), PyTorch {result['images_per_sec']['torch']:.1f} img/s "
                  f"({np.median(result['minor_faults_per_step_by_round']['torch']):,.0f})",
                  flush=True)
    rate = lambda name, who: [r["images_per_sec"][who] for r in runs[name]]  # noqa: E731
    figures = {}
    for who, label in (("jax_split", "JAX"), ("torch", "PyTorch")):
        gain = [huge / default for huge, default
                in zip(rate("huge_pages", who), rate("default", who))]
        figures[f"{who}_huge_pages_over_default"] = gain
        print(f"{label}: default {summary(rate('default', who))} img/s, huge pages "
              f"{summary(rate('huge_pages', who))}; huge pages / default {summary(gain)}")
    for name in SETTINGS:
        ratios = [r["ratio_jax_split_to_torch"] for r in runs[name]]
        figures[f"jax_over_torch_{name}"] = ratios
        print(f"JAX / PyTorch in one process, {name}: {summary(ratios)}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"settings": SETTINGS, "runs": runs, "figures": figures,
             "provenance": provenance.provenance()}, indent=1))


if __name__ == "__main__":
    main()
