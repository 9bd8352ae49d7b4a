"""A run's validation history as a Markdown table, from its workdir's metrics.jsonl.

One row per evaluation (epoch, step, learning rate, top-1 and top-5 error, views), the
schedule's events, the best centre-crop top-1 error and, when the run has ended, its final
evaluation. Records superseded by a resume are left out (metrics_writer.surviving_records).

Run:
    python experiments/summarize_run.py runs/cifar10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_jax.common.run_files import read_records, surviving_records  # noqa: E402


def summarize(workdir: Path) -> str:
    """The Markdown summary of one workdir."""
    records = surviving_records(read_records(workdir))
    if not records:
        raise SystemExit(f"{workdir} has no metrics.jsonl records: is it a run's workdir?")
    lines = ["| epoch | step | learning rate | top-1 error | top-5 error | views |",
             "|---|---|---|---|---|---|"]
    learning_rate = None
    for record in records:
        if record.get("split") == "train":
            learning_rate = record["learning_rate"]
        elif record.get("split") == "val":
            rate = "" if learning_rate is None else f"{learning_rate:g}"
            lines.append(f"| {record['epoch']:g} | {record['step']} | {rate} | "
                         f"{record['top1_error']:.4f} | {record['top5_error']:.4f} | "
                         f"{record['crops']} |")
        elif record.get("event", "").startswith("schedule_"):
            learning_rate = record["learning_rate"]  # from the next epoch on
            lines.append(f"| | {record['step']} | {record['event']}: now {learning_rate:g} "
                         "| | | |")
    centre = [r for r in records if r.get("split") == "val" and r.get("crops") == 1]
    if centre:
        best = min(centre, key=lambda r: r["top1_error"])
        lines.append("")
        lines.append(f"best centre-crop top-1 error {best['top1_error']:.4f} (top-5 "
                     f"{best['top5_error']:.4f}) after epoch {best['epoch']:g}, step "
                     f"{best['step']}; {len(centre)} evaluations")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path)
    print(summarize(parser.parse_args().workdir))


if __name__ == "__main__":
    main()
