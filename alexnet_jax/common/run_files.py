"""The files a run leaves in its workdir, and reading them back (JSON only: no TensorFlow or JAX,
so reports and study runners can read workdirs cheaply)."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
COMPRESSED_METRICS_FILE = METRICS_FILE + ".gz"   # how a study's record keeps a long one
COMPLETION_FILE = "run_complete.json"
CONFIG_FILE = "config.json"
# --mode=eval's results: their own file, so the training record (metrics.jsonl, TensorBoard)
# stays the training's alone
EVAL_RESULTS_FILE = "eval_results.jsonl"
# what running the trained network on new images needs besides the config (predict.load_workdir)
CLASS_NAMES_FILE = "class_names.json"
STATS_FILE = "dataset_stats.npz"
# config.json's model keys that choose how the network computes, never what it computes (the
# same values to float rounding: tests/test_model.py; model/build.py resolves their `auto`): a
# resume may change them, a checkpoint does not depend on them, a study does not compare them
FORMULATION_KEYS = ("column_impl", "lrn_impl", "conv1_impl", "conv_grad_impl", "cpu_conv_impl")


def read_records(workdir: Path) -> list[dict[str, Any]]:
    """Every record of a workdir's metrics.jsonl, or of a study record's metrics.jsonl.gz (for
    tests, plots and reports). A last line
    that does not parse and has no newline is a record still being written, or cut off by a
    kill or a full disk: it is not read (the run's writer drops it when it next writes)."""
    path = Path(workdir) / METRICS_FILE
    compressed = path.with_name(COMPRESSED_METRICS_FILE)
    if path.exists():
        text = path.read_text()
    elif compressed.exists():  # a study's record of a run that logged many steps
        text = gzip.decompress(compressed.read_bytes()).decode()
    else:
        return []
    lines = text.splitlines(keepends=True)
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines) and not line.endswith("\n"):
                break
            raise
    return records


def surviving_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the run's one history: a run that was killed after its last checkpoint
    logged steps that the resumed run (its `run_start` names the step it resumed from) then
    trained again; those superseded records are dropped. So is an evaluation, epoch line or
    epoch-end event at the resumed step that the resumed run made again (its predecessor was
    killed after logging it, before its checkpoint recorded it): the later one is kept."""
    kept: list[dict[str, Any]] = []
    for record in records:
        if record.get("event") == "run_start":
            resumed_from = record.get("start_step", 0)
            kept = [r for r in kept if "step" not in r or r["step"] <= resumed_from]
        elif (identity := _redone_identity(record)) is not None:
            kept = [r for r in kept if _redone_identity(r) != identity]
        kept.append(record)
    return kept


def _redone_identity(record: dict[str, Any]) -> tuple | None:
    """What makes a record the same work done again at its step (None: a record that may
    repeat, such as a config change at each of two resumes)."""
    if "step" not in record:
        return None
    if "split" in record:
        return record["step"], record["split"], record.get("crops")
    event = str(record.get("event", ""))
    if event.startswith("schedule_") or event == "train_error_target_reached":
        return record["step"], event
    return None


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
