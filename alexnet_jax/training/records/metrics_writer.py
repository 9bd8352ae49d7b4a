"""Where a run's numbers go: metrics.jsonl (one JSON object per line) and TensorBoard events.

The events are written with TensorBoard's own protobuf writer, not TensorFlow's tf.summary, so
a run records them where TensorFlow is not installed. Only process 0 writes; the others get a
writer that drops everything.
"""

from __future__ import annotations

import errno
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.run_files import METRICS_FILE, read_records, surviving_records  # noqa: F401


def _plain(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        value = value.item() if np.ndim(value) == 0 else value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    return value


def _png(image_HxWx3: np.ndarray) -> bytes:
    from PIL import Image  # noqa: PLC0415

    buffer = io.BytesIO()
    Image.fromarray((np.clip(image_HxWx3, 0, 1) * 255).round().astype(np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def _drop_cut_off_line(path: Path) -> None:
    """A last line without its newline (a kill or a full disk cut it off) would have the
    next record glued to it, and the file would no longer parse: it is cut away."""
    if not path.exists():
        return
    with path.open("rb+") as f:
        size = f.seek(0, io.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        logging.warning("%s ended in a cut-off record (%d bytes); it is dropped", path,
                        size - keep)
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


class MetricsWriter:
    """Appends JSONL records and TensorBoard scalars/images under the workdir."""

    def __init__(self, workdir: Path, enabled: bool = True, jsonl_name: str = METRICS_FILE,
                 tensorboard: bool = True):
        self.enabled = enabled
        self._workdir = Path(workdir)
        self._jsonl_path = self._workdir / jsonl_name
        self._tensorboard = tensorboard
        self._events = None  # the TensorBoard file is created by the first scalar or image
        if enabled:
            _drop_cut_off_line(self._jsonl_path)

    def _write_values(self, step: int, values: list) -> None:
        if not self._tensorboard:
            return
        from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: PLC0415
        from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: PLC0415

        if self._events is None:
            self._events = EventFileWriter(str(self._workdir))
        self._events.add_event(event_pb2.Event(
            wall_time=time.time(), step=step, summary=summary_pb2.Summary(value=values)))

    def write_record(self, record: dict[str, Any]) -> None:
        """One line of metrics.jsonl."""
        if not self.enabled:
            return
        record = {**record, "time": record.get("time", time.time())}  # wall clock, for reports
        line = json.dumps({key: _plain(value) for key, value in record.items()})
        try:
            with self._jsonl_path.open("a") as f:
                f.write(line + "\n")
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise UserError(
                f"no space left on the device holding {self._jsonl_path}: a metrics record "
                "could not be written. Free space on that device, then run the same command "
                "again to resume from the last checkpoint (a cut-off record is dropped).") from None

    def write_scalars(self, step: int, scalars: dict[str, float], prefix: str = "") -> None:
        """TensorBoard scalars at `step`, named prefix + key (the scalars plugin's format)."""
        if not self.enabled:
            return
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2  # noqa: PLC0415

        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
        self._write_values(step, [summary_pb2.Summary.Value(
            tag=prefix + key, metadata=metadata,
            tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, float_val=[float(value)]))
            for key, value in scalars.items()])

    def write_images(self, step: int, name: str, images_NxHxWx3: np.ndarray) -> None:
        """A TensorBoard image summary (values in [0, 1]; the images plugin's format)."""
        if not self.enabled:
            return
        from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2  # noqa: PLC0415

        images = np.asarray(images_NxHxWx3)
        height, width = images.shape[1:3]
        encoded = [str(width).encode(), str(height).encode(), *(_png(im) for im in images)]
        metadata = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images"))
        shape = tensor_shape_pb2.TensorShapeProto(
            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=len(encoded))])
        self._write_values(step, [summary_pb2.Summary.Value(
            tag=name, metadata=metadata, tensor=tensor_pb2.TensorProto(
                dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=encoded))])

    def flush(self) -> None:
        if self._events is not None:
            self._events.flush()

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
