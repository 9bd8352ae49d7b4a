"""The training step under each host allocator setting (alexnet_jax/common/host_memory.py).

The allocator's tunables are fixed when a process starts, so each setting is its own process of
`benchmark_step.py --torch` (JAX's step and the PyTorch reference in one process), the settings
alternated over rounds so that a slow spell of the machine falls on all of them:

    python experiments/benchmark_host_memory.py --rounds 3 --steps 2 \
        [--settings huge_pages,trainer] [--processes both|jax|separate] \
        [--json docs/results/step_cpu_host_memory.json]

(--processes: `both` times JAX and PyTorch in one process; `jax` JAX's step alone; `separate`
each alone in a process of its own, one after the other. Under glibc's default or huge pages
alone, a PyTorch that has run in the same process slowed JAX's step here by about a third:
docs/performance.md.)

Settings: glibc's default (`glibc.malloc.hugetlb=0`); huge pages alone (`=1`, the trainer's
setting from 984eba5 until ff393db); the freed memory kept for the next step without
huge pages; and what the trainer restarts with on this host (`tunables_for_training`: kept
memory, with huge pages where the kernel gives them on request). Each process warms up with
`--warmup` steps first (a kept heap grows to its size over the first two or three).

Prints, per round and as medians [ranges]: each framework's images/s, minor page faults a step
and the process's peak resident memory under each setting, each setting's ratio to
the first one named (adjacent processes), and JAX / PyTorch in each process.
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
            "huge_pages": f"{host_memory.HUGE_PAGES_TUNABLE}=1",
            "keep_freed": host_memory.as_tunables_text(host_memory.KEEP_FREED_MEMORY),
            "trainer": host_memory.tunables_for_training({"JAX_PLATFORMS": "cpu"}) or ""}


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
    merged["peak_resident_gb"] = max(jax_result["peak_resident_gb"],
                                     torch_result["peak_resident_gb"])
    merged["ratio_jax_split_to_torch"] = (merged["images_per_sec"]["jax_split"]
                                          / merged["images_per_sec"]["torch"])
    return merged


def summary(values: list[float]) -> str:
    return f"{np.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="timed steps a process")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps a process: compilation, and a kept heap's growth")
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help="comma-separated, of: " + ", ".join(SETTINGS))
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
    settings = {name: SETTINGS[name] for name in args.settings.split(",")}
    print("settings: " + "; ".join(f"{name} {value!r}" for name, value in settings.items()))
    runs = {name: [] for name in settings}
    for round_index in range(args.rounds):
        for name, setting in settings.items():
            result = one_round(setting, args)
            runs[name].append(result)
            print(f"  round {round_index + 1}, {name:10s}: " + ", ".join(
                f"{label} {result['images_per_sec'][who]:.1f} img/s "
                f"({np.median(result['minor_faults_per_step_by_round'][who]):,.0f} faults a "
                "step)" for who, label in contenders(args))
                + f"; peak resident {result['peak_resident_gb']:.1f} GB", flush=True)
    rate = lambda name, who: [r["images_per_sec"][who] for r in runs[name]]  # noqa: E731
    figures, reference = {}, next(iter(settings))   # the first setting named
    for who, label in contenders(args):
        line = []
        for name in settings:
            line.append(f"{name} {summary(rate(name, who))}")
            if name != reference:
                gain = [mine / theirs for mine, theirs
                        in zip(rate(name, who), rate(reference, who))]
                figures[f"{who}_{name}_over_{reference}"] = gain
                line[-1] += f" ({summary(gain)}x {reference})"
        print(f"{label} img/s: " + "; ".join(line))
    for name in settings if args.processes != "jax" else ():
        ratios = [r["ratio_jax_split_to_torch"] for r in runs[name]]
        figures[f"jax_over_torch_{name}"] = ratios
        print(f"JAX / PyTorch, {'one process' if args.processes == 'both' else 'each alone'}, "
              f"{name}: {summary(ratios)}")
    for name in settings:
        print(f"peak resident memory, {name}: "
              f"{summary([r['peak_resident_gb'] for r in runs[name]])} GB")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"settings": settings, "processes": args.processes, "runs": runs, "figures": figures,
             "provenance": provenance.provenance()}, indent=1))


if __name__ == "__main__":
    main()
