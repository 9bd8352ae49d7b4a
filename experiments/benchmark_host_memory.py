"""The training step with and without glibc's huge pages (alexnet_jax/common/host_memory.py).

The allocator's tunables are fixed when a process starts, so each setting is its own process of
`benchmark_step.py --torch` (JAX's step and the PyTorch reference in one process), the two
settings alternated over rounds so that a slow spell of the machine falls on both:

    python experiments/benchmark_host_memory.py --rounds 3 --steps 2 \
        [--processes both|jax|separate] [--json docs/results/step_cpu_host_memory.json]

(--processes: `both` times JAX and PyTorch in one process; `jax` JAX's step alone; `separate`
each alone in a process of its own, one after the other. A PyTorch that has run in the same
process slows JAX's step here by about a third: docs/performance.md.)

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


def one_process(setting: str, args: argparse.Namespace, who: str = "both") -> dict:
    """benchmark_step.py's results for one process run with the glibc tunable `setting`:
    JAX's step and PyTorch's (`both`), or only `jax` or only `torch`."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "step.json"
        environment = {**os.environ, host_memory.TUNABLES_VARIABLE: setting}
        subprocess.run([sys.executable, str(REPO / "experiments" / "benchmark_step.py"),
                        "--batch", str(args.batch), "--steps", str(args.steps), "--warmup",
                        str(args.warmup), "--variants", "none" if who == "torch" else "split",
                        "--json", str(output), *([] if who == "jax" else ["--torch"])],
                       env=environment, check=True, stdout=subprocess.DEVNULL)
        return json.loads(output.read_text())


def contenders(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(results key, label) of each step a round times."""
    return [("jax_split", "JAX"), *([] if args.processes == "jax" else [("torch", "PyTorch")])]


def one_round(setting: str, args: argparse.Namespace) -> dict:
    """The round's figures under `setting`: from one process (`both`, `jax`) or from a JAX
    process and then a PyTorch one (`separate`), merged."""
    if args.processes != "separate":
        return one_process(setting, args, args.processes)
    jax_result, torch_result = (one_process(setting, args, who) for who in ("jax", "torch"))
    merged = {key: {**jax_result[key], **torch_result[key]}
              for key in ("images_per_sec", "minor_faults_per_step_by_round")}
    merged["ratio_jax_split_to_torch"] = (merged["images_per_sec"]["jax_split"]
                                          / merged["images_per_sec"]["torch"])
    return merged


def summary(values: list[float]) -> str:
    return f"{np.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps a process")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--processes", choices=["both", "jax", "separate"], default="both",
                        help="both: JAX and PyTorch in one process; jax: JAX's step alone; "
                        "separate: each alone in its own process, one after the other")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    print(f"host {provenance.host_processor()}, THP mode "
          f"{host_memory.transparent_huge_pages_mode()}, glibc {host_memory.glibc_version()}; "
          f"{args.rounds} rounds, batch {args.batch}, {args.steps} timed steps a process",
          flush=True)
    runs = {name: [] for name in SETTINGS}
    for round_index in range(args.rounds):
        for name, setting in SETTINGS.items():
            result = one_round(setting, args)
            runs[name].append(result)
            print(f"  round {round_index + 1}, {name:10s}: " + ", ".join(
                f"{label} {result['images_per_sec'][who]:.1f} img/s "
                f"({np.median(result['minor_faults_per_step_by_round'][who]):,.0f} faults a "
                "step)" for who, label in contenders(args)), flush=True)
    rate = lambda name, who: [r["images_per_sec"][who] for r in runs[name]]  # noqa: E731
    figures = {}
    for who, label in contenders(args):
        gain = [huge / default for huge, default
                in zip(rate("huge_pages", who), rate("default", who))]
        figures[f"{who}_huge_pages_over_default"] = gain
        print(f"{label}: default {summary(rate('default', who))} img/s, huge pages "
              f"{summary(rate('huge_pages', who))}; huge pages / default {summary(gain)}")
    for name in SETTINGS if args.processes != "jax" else ():
        ratios = [r["ratio_jax_split_to_torch"] for r in runs[name]]
        figures[f"jax_over_torch_{name}"] = ratios
        print(f"JAX / PyTorch, {'one process' if args.processes == 'both' else 'each alone'}, "
              f"{name}: {summary(ratios)}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"settings": SETTINGS, "processes": args.processes, "runs": runs, "figures": figures,
             "provenance": provenance.provenance()}, indent=1))


if __name__ == "__main__":
    main()
