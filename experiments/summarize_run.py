"""A run's validation history as a Markdown table, from its workdir's metrics.jsonl.

One row per evaluation (epoch, step, learning rate, top-1 and top-5 error, views), the
schedule's events, the best centre-crop top-1 error and, when the run has ended, its final
evaluation. Records superseded by a resume are left out (metrics_writer.surviving_records).

`--speed` instead summarizes the training throughput: the median and the range of the logged
windows' images per second and data-wait fractions. The first window is left out: it holds the
compilation. The windows just after an evaluation can run faster than the input pipeline
sustains, because the pipeline fills its buffers while the evaluation runs; the range shows them.

Run:
    python experiments/summarize_run.py runs/cifar10
    python experiments/summarize_run.py --speed docs/results/gpu_h200/prepared_workers15
"""

from __future__ import annotations

import argparse
import statistics
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


def training_speed(records: list[dict]) -> dict:
    """Median, least and greatest images/s and data-wait fraction over the training windows
    after the first (which holds the compilation), and how many windows that is."""
    windows = [r for r in records if r.get("split") == "train"][1:]
    if not windows:
        raise SystemExit("fewer than two training windows were logged: log more often "
                         "(train.log_every_steps) or train longer")
    speed = {"windows": len(windows)}
    for key in ("images_per_sec", "data_wait_fraction"):
        values = [r[key] for r in windows]
        speed[key] = {"median": statistics.median(values), "min": min(values),
                      "max": max(values)}
    return speed


def speed_line(workdir: Path) -> str:
    """One line: the training throughput of a workdir's run (training_speed)."""
    records = surviving_records(read_records(workdir))
    speed = training_speed(records)
    rate, wait = speed["images_per_sec"], speed["data_wait_fraction"]
    return (f"{workdir}: {rate['median']:,.0f} images/s (median; {rate['min']:,.0f}-"
            f"{rate['max']:,.0f}), data wait {wait['median']:.2f} ({wait['min']:.2f}-"
            f"{wait['max']:.2f}), {speed['windows']} windows after the first")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, nargs="+")
    parser.add_argument("--speed", action="store_true",
                        help="the training throughput instead of the validation history")
    args = parser.parse_args()
    for workdir in args.workdir:
        print(speed_line(workdir) if args.speed else summarize(workdir))


if __name__ == "__main__":
    main()
