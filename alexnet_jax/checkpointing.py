"""Orbax checkpoints of a run: parameters, optimizer state and the run's progress.

Layout (plain Orbax, readable without this project):
    <workdir>/checkpoints/<step>/params/     {layer: {"kernel", "bias"}} arrays
    <workdir>/checkpoints/<step>/opt_state/  the optimizer state (velocity, learning rate)
    <workdir>/checkpoints/<step>/progress/   JSON: step, epoch, schedule state, config fingerprint
A checkpoint directory appears only once complete (Orbax writes to a temporary name and renames),
so a run killed at any moment leaves the previous checkpoints intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves when asked; keeps the last `keep` checkpoints and the one with the lowest
    validation top-1 error (among checkpoints saved with `top1_error`; ties: the later)."""

    def __init__(self, directory: Path, keep: int, asynchronous: bool = True):
        keep_best = ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: -metrics["top1_error"], n=1,
            keep_checkpoints_without_metrics=False)
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(keep), keep_best])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=True, enable_async_checkpointing=asynchronous)
        self.directory = Path(directory).absolute()
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._last_saved = self._manager.latest_step()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, params, opt_state, progress: dict[str, Any],
             top1_error: float | None = None) -> bool:
        """Start saving (asynchronously); returns whether a checkpoint is written at `step`.

        `top1_error` (validation) makes the checkpoint a candidate for "best"."""
        if step == self._last_saved:
            return False
        metrics = None if top1_error is None else {"top1_error": float(top1_error)}
        saved = self._manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
            progress=ocp.args.JsonSave(progress)), metrics=metrics, force=True)
        if saved:
            self._last_saved = step
        return saved

    def restore_progress(self, step: int) -> dict[str, Any]:
        """Only the JSON progress record of checkpoint `step`."""
        return self._manager.restore(step, args=ocp.args.Composite(
            progress=ocp.args.JsonRestore()))["progress"]

    def restore(self, step: int, abstract_params, abstract_opt_state
                ) -> tuple[Any, Any, dict[str, Any]]:
        """(params, opt_state, progress) of checkpoint `step`, laid out like the abstract
        targets (jax.ShapeDtypeStruct leaves carrying shardings)."""
        restored = self._manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            opt_state=ocp.args.StandardRestore(abstract_opt_state),
            progress=ocp.args.JsonRestore()))
        return restored["params"], restored["opt_state"], restored["progress"]

    def wait(self) -> None:
        """Block until asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(tree) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)


def load_params(params_dir: str | Path) -> dict[str, Any]:
    """A checkpoint's parameters as NumPy arrays, on any machine (plain Orbax calls; the
    topology the checkpoint was saved on does not matter). `params_dir` is
    <workdir>/checkpoints/<step>/params."""
    import numpy as np  # noqa: PLC0415

    params_dir = Path(params_dir).absolute()  # Orbax misreads relative paths' metadata
    checkpointer = ocp.PyTreeCheckpointer()
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                            checkpointer.metadata(params_dir).item_metadata.tree)
    return checkpointer.restore(params_dir, restore_args=as_numpy)
