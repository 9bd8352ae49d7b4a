"""Where a run's numbers go: metrics.jsonl (one JSON object per line) and TensorBoard events.

Only process 0 writes; the others get a writer that drops everything.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from alexnet_jax.run_files import METRICS_FILE, read_records, surviving_records  # noqa: F401



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
        self._workdir = Path(workdir)
        self._jsonl_path = self._workdir / METRICS_FILE
        self._events = None  # the TensorBoard file is created by the first scalar or image

    @property
    def _summary(self):
        if self._events is None:
            self._events = tf.summary.create_file_writer(str(self._workdir))
        return self._events

    def write_record(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl."""
        if not self.enabled:
            return
        record = {**record, "time": record.get("time", time.time())}  # wall clock, for reports
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
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
