"""The device mesh and the one table that says which mesh axis holds which tensor role.

The paper ran its two columns on two GPUs. Here a mesh has two axes:
`data` (data parallelism: the batch is split over it) and `model` (the columns: each device on it
holds its columns' kernels and activations). On one device both columns are co-located.
"""

from __future__ import annotations

import jax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from alexnet_jax.common.errors import UserError

DATA_AXIS = "data"
MODEL_AXIS = "model"

# Every sharding decision of the project, by tensor role. A role maps to the mesh axes of its
# leading dimensions; the remaining dimensions are replicated.
ROLE_AXES: dict[str, tuple[str | None, ...]] = {
    # Per-column weights carry a leading column axis: each device keeps its own columns.
    "column_param": (MODEL_AXIS,),
    # Weights every column uses (the fc8 bias): replicated.
    "shared_param": (),
    # Images, labels, logits and evaluation masks: split over the batch.
    "batch": (DATA_AXIS,),
    # fc6/fc7 activations and their dropout masks: batch over `data`, units over `model`.
    "batch_by_column": (DATA_AXIS, MODEL_AXIS),
}


def axes_for(role: str, ndim: int) -> tuple[str | None, ...]:
    """The mesh axis of each of the `ndim` dimensions of a tensor with this role."""
    leading = ROLE_AXES[role]
    return leading + (None,) * (ndim - len(leading))


def spec_for(role: str) -> P:
    """The PartitionSpec of a tensor with this role (trailing dimensions replicated)."""
    return P(*ROLE_AXES[role])


def sharding_for(mesh: Mesh, role: str) -> NamedSharding:
    """The NamedSharding of a tensor with this role on `mesh`."""
    return NamedSharding(mesh, spec_for(role))


def resolve_model_axis(requested: int, columns: int, num_devices: int) -> int:
    """Size of the `model` axis: `requested`, or (if <= 0) 2 when the columns can be split."""
    size = requested
    if size <= 0:
        size = 2 if (columns == 2 and num_devices >= 2 and num_devices % 2 == 0) else 1
    if size not in (1, 2):
        raise UserError(f"mesh.model={requested} is not supported: the `model` axis holds the "
                        "network's columns, so it must be 1 or 2 (or -1 for automatic).")
    if columns % size:
        raise UserError(f"mesh.model={size} does not divide model.columns={columns}: each device "
                        "on the `model` axis must hold whole columns. Set --config.mesh.model=1 "
                        "or use the two-column model (--config.model.columns=2).")
    if size > num_devices or num_devices % size:
        raise UserError(f"mesh.model={size} needs a device count divisible by {size}, but this "
                        f"run sees {num_devices} device(s). Set --config.mesh.model=1, or run on "
                        "more devices (on CPU: XLA_FLAGS=--xla_force_host_platform_device_count=N).")
    return size


def make_mesh(model_axis: int, columns: int, devices: list | None = None) -> Mesh:
    """A (data, model) mesh over all devices (or `devices`); `model_axis` <= 0 means automatic."""
    devices = list(devices if devices is not None else jax.devices())
    model = resolve_model_axis(model_axis, columns, len(devices))
    data = len(devices) // model
    return jax.make_mesh((data, model), (DATA_AXIS, MODEL_AXIS), devices=devices)


def single_device_mesh() -> Mesh:
    """A 1 x 1 mesh on the first device: both columns co-located."""
    return jax.make_mesh((1, 1), (DATA_AXIS, MODEL_AXIS), devices=jax.devices()[:1])


def describe(mesh: Mesh) -> dict[str, int]:
    """Axis name -> size, for logs and metrics."""
    return {name: int(size) for name, size in mesh.shape.items()}
