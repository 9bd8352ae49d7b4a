"""The files a run leaves in its workdir, and reading them back (JSON only: no TensorFlow or JAX,
so reports and study runners can read workdirs cheaply)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
COMPLETION_FILE = "run_complete.json"
CONFIG_FILE = "config.json"
# --mode=eval's results: their own file, so the training record (metrics.jsonl, TensorBoard)
# stays the training's alone
EVAL_RESULTS_FILE = "eval_results.jsonl"


def read_records(workdir: Path) -> list[dict[str, Any]]:
    """Every record of a workdir's metrics.jsonl (for tests, plots and reports)."""
    path = Path(workdir) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def surviving_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the run's one history: a run that was killed after its last checkpoint
    logged steps that the resumed run (its `run_start` names the step it resumed from) then
    trained again; those superseded records are dropped."""
    kept: list[dict[str, Any]] = []
    for record in records:
        if record.get("event") == "run_start":
            resumed_from = record.get("start_step", 0)
            kept = [r for r in kept if "step" not in r or r["step"] <= resumed_from]
        kept.append(record)
    return kept


def read_divergence(workdir: Path) -> dict[str, Any] | None:
    """The `diverged` record (step and loss) of a run whose latest start ended in a non-finite
    loss; None for a run that is still going, finished, or was resumed since."""
    diverged = None
    for record in read_records(workdir):
        if record.get("event") == "run_start":
            diverged = None
        elif record.get("event") == "diverged":
            diverged = record
    return diverged


def read_train_evaluation(workdir: Path) -> dict[str, Any] | None:
    """The last evaluation of the training images (`--mode=eval --split=train`: centre crops,
    no augmentation or dropout) in a workdir's eval_results.jsonl, if one was made; of a
    finished run, only one of its final step (an evaluation of an earlier checkpoint is not
    the fit the run ended with)."""
    path = Path(workdir) / EVAL_RESULTS_FILE
    if not path.exists():
        return None
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    found = [r for r in found if r.get("split") == "train" and r.get("crops") == 1]
    completion = read_completion(workdir)
    if completion is not None:
        found = [r for r in found if r.get("step") == completion["step"]]
    return found[-1] if found else None


def read_completion(workdir: Path) -> dict[str, Any] | None:
    """The outcome of a finished run (its last step and final evaluation), if it finished."""
    path = Path(workdir) / COMPLETION_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_atomically(path: Path, text: str) -> None:
    """Write `path` whole or not at all: beside it, then renamed into place, so a reader (or a
    run killed mid-write) never leaves it cut short."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
