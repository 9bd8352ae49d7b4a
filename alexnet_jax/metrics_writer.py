"""Where a run's numbers go: metrics.jsonl (one JSON object per line) and TensorBoard events.

Only process 0 writes; the others get a writer that drops everything.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item() if np.ndim(value) == 0 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


class MetricsWriter:
    """Appends JSONL records and TensorBoard scalars/images under the workdir."""

    def __init__(self, workdir: Path, enabled: bool = True):
        self.enabled = enabled
        self._jsonl_path = Path(workdir) / METRICS_FILE
        self._summary = tf.summary.create_file_writer(str(workdir)) if enabled else None

    def write_record(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl."""
        if not self.enabled:
            return
        line = json.dumps({key: _plain(value) for key, value in record.items()})
        with self._jsonl_path.open("a") as f:
            f.write(line + "\n")

    def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
        """TensorBoard scalars at `step`, named prefix + key."""
        if not self.enabled:
            return
        with self._summary.as_default(step=step):
            for key, value in scalars.items():
                tf.summary.scalar(prefix + key, float(value))

    def write_images(self, step: int, name: str, images_NxHxWx3: np.ndarray) -> None:
        """A TensorBoard image summary (values in [0, 1])."""
        if not self.enabled:
            return
        with self._summary.as_default(step=step):
            tf.summary.image(name, images_NxHxWx3, max_outputs=len(images_NxHxWx3))

    def flush(self) -> None:
        if self.enabled:
            self._summary.flush()

    def close(self) -> None:
        if self.enabled:
            self._summary.close()


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
