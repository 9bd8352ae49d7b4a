"""Orbax checkpoints of a run: parameters, optimizer state and the run's progress.

Layout (plain Orbax, readable without this project):
    <workdir>/checkpoints/<step>/params/     {layer: {"kernel", "bias"}} arrays
    <workdir>/checkpoints/<step>/opt_state/  the optimizer state (velocity, learning rate)
    <workdir>/checkpoints/<step>/progress/   JSON: step, epoch, schedule state, config fingerprint
A checkpoint directory appears only once complete (Orbax writes to a temporary name and renames),
so a run killed at any moment leaves the previous checkpoints intact.

Faults: a checkpoint that cannot be restored (truncated or damaged files) is reported and moved
to <workdir>/checkpoints_unreadable/ (never deleted), and the next older one is tried. A save
that fails because the disk is full removes its partial directory and ends the run with a
message (UserError) naming the space needed and the newest complete checkpoint.
"""

from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from alexnet_jax.disk import directory_bytes, format_bytes, free_bytes
from alexnet_jax.errors import UserError

UNREADABLE_DIR = "checkpoints_unreadable"
TMP_MARKER = ".orbax-checkpoint-tmp"


class Checkpointer:
    """Saves when asked; keeps the last `keep` checkpoints and the one with the lowest
    validation top-1 error (among checkpoints saved with `top1_error`; ties: the later)."""

    def __init__(self, directory: Path, keep: int, asynchronous: bool = True):
        self.directory = Path(directory).absolute()
        self._keep = keep
        self._asynchronous = asynchronous
        self.bytes_needed = 0  # one checkpoint's size, for the disk-space checks (set by the run)
        self._manager = self._open_manager()
        self._last_saved = self._manager.latest_step()
        self._failed = False

    def _open_manager(self) -> ocp.CheckpointManager:
        keep_best = ocp.checkpoint_managers.BestN(
            get_metric_fn=lambda metrics: -metrics["top1_error"], n=1,
            keep_checkpoints_without_metrics=False)
        policy = ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(self._keep), keep_best])
        # best_fn makes Orbax write each checkpoint's metrics to disk (and read them back when
        # the manager is reopened): without it a resumed run's policy sees no metrics on the old
        # checkpoints and its next save deletes the best one
        options = ocp.CheckpointManagerOptions(
            preservation_policy=policy, create=True, best_fn=lambda m: m["top1_error"],
            best_mode="min", enable_async_checkpointing=self._asynchronous)
        return ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, params, opt_state, progress: dict[str, Any],
             top1_error: float | None = None, replace: bool = False) -> bool:
        """Start saving (asynchronously); returns whether a checkpoint is written at `step`.

        `top1_error` (validation) makes the checkpoint a candidate for "best". `replace`: a
        checkpoint already at `step` (same parameters, older progress record: an epoch's end
        work done after a resume) is deleted first, then written again."""
        if step == self._last_saved and not replace:
            return False
        if replace and step in self.all_steps():
            self.wait()
            self._manager.delete(step)
        if self._last_saved is None:
            self.warn_if_short_of_space()
        metrics = None if top1_error is None else {"top1_error": float(top1_error)}
        saved = self._guard(lambda: self._manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
            progress=ocp.args.JsonSave(progress)), metrics=metrics, force=True))
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

    def restore_newest(self, abstract_params, abstract_opt_state,
                       check_progress: Callable[[int, dict[str, Any]], None],
                       set_aside: bool = True) -> tuple[int, tuple[Any, Any, dict]] | None:
        """The newest checkpoint that restores completely: (step, (params, opt_state,
        progress)), or None when there is none. `check_progress(step, progress)` may refuse a
        checkpoint (UserError, e.g. another model's). Unreadable checkpoints are reported; once
        an older one has restored, they are moved to checkpoints_unreadable/ (with
        `set_aside`). When none restores, nothing is moved and UserError says so."""
        failures: list[tuple[int, str]] = []
        for step in sorted(self.all_steps(), reverse=True):
            try:
                progress, cause = self.restore_progress(step), None
            except Exception as error:  # noqa: BLE001 - any failure: try an older checkpoint
                progress, cause = None, error_line(error)
            if not _all_processes_ok(cause is None):  # all processes go on from the same step
                failures.append((step, cause or "another process could not read its progress"))
                logging.warning("checkpoint %s cannot be restored (%s)",
                                self.directory / str(step), failures[-1][1])
                continue
            check_progress(step, progress)
            try:
                restored, cause = self.restore(step, abstract_params, abstract_opt_state), None
            except Exception as error:  # noqa: BLE001
                restored, cause = None, error_line(error)
            if _all_processes_ok(cause is None):
                if failures:
                    moved = self._set_aside([s for s, _ in failures]) if set_aside else []
                    logging.warning(
                        "resuming from checkpoint %d, the newest that restores completely; "
                        "unreadable: %s", step, "; ".join(
                            f"{self.directory / str(s)} ({c})" for s, c in failures)
                        + (f" (moved to {', '.join(map(str, moved))}, not deleted)" if moved
                           else ""))
                return step, restored
            failures.append((step, cause or "another process could not restore its part"))
            logging.warning("checkpoint %s cannot be restored (%s)", self.directory / str(step),
                            failures[-1][1])
        if failures:
            raise UserError(
                f"no checkpoint in {self.directory} can be restored: " + "; ".join(
                    f"step {s}: {c}" for s, c in failures)
                + ". Nothing was moved or deleted. Put a good copy of a checkpoint back, or "
                "start a new run with another --workdir.")
        return None

    def _set_aside(self, steps: list[int]) -> list[Path]:
        """Move checkpoints to <workdir>/checkpoints_unreadable/<step>-<time>/ (process 0)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        targets = [self.directory.parent / UNREADABLE_DIR / f"{step}-{stamp}" for step in steps]
        multihost_utils.sync_global_devices("set_aside_before")
        if jax.process_index() == 0:
            for step, target in zip(steps, targets):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(self.directory / str(step)), str(target))
        multihost_utils.sync_global_devices("set_aside_after")
        self._manager.close()  # forget the moved steps
        self._manager = self._open_manager()
        self._last_saved = self._manager.latest_step()
        return targets

    def warn_if_short_of_space(self) -> None:
        """A warning before the first save when the disk cannot hold one more checkpoint."""
        free = free_bytes(self.directory)
        if self.bytes_needed and free < self.bytes_needed:
            logging.warning("the disk holding %s has %s free, but a checkpoint of this run needs "
                            "about %s: saving it will fail. Free space now.", self.directory,
                            format_bytes(free), format_bytes(self.bytes_needed))

    def _guard(self, action: Callable[[], Any]) -> Any:
        """Run an Orbax call; a full disk becomes a UserError after the partial checkpoint is
        removed (the run then stops, and the same command resumes once space is freed)."""
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - only a full disk is handled here
            if not is_disk_full(error):
                raise
            self._failed = True
            try:  # no save may still be writing when its partial directory is removed
                self._manager.wait_until_finished()
            except Exception:  # noqa: BLE001 - the same full disk: already being reported
                pass
            removed = self.remove_partial_checkpoints()
            newest = self._manager.latest_step()
            if newest is not None:  # what one checkpoint really takes on this disk
                self.bytes_needed = max(self.bytes_needed,
                                        directory_bytes(self.directory / str(newest)))
            free = free_bytes(self.directory)
            raise UserError(
                f"no space left on the device holding {self.directory} ({format_bytes(free)} "
                f"free): a checkpoint of this run needs about {format_bytes(self.bytes_needed)}. "
                + (f"The partial checkpoint ({', '.join(removed)}) was removed. " if removed
                   else "")
                + (f"The newest complete checkpoint is step {newest} "
                   f"({self.directory / str(newest)}); " if newest is not None else
                   "There is no complete checkpoint yet; ")
                + "free space on that device, then run the same command again to resume."
            ) from None

    def remove_partial_checkpoints(self) -> list[str]:
        """Delete the temporary directories of checkpoints that were never completed."""
        removed = []
        if jax.process_index() == 0:
            for path in sorted(self.directory.glob(f"*{TMP_MARKER}*")):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name)
        return removed

    def wait(self) -> None:
        """Block until asynchronous saves are on disk."""
        self._guard(self._manager.wait_until_finished)

    def close(self) -> None:
        if self._failed:  # after a failed save, only release what is held
            try:
                self._manager.close()
            except Exception:  # noqa: BLE001 - the failure is already reported
                pass
            return
        self._guard(self._manager.wait_until_finished)
        self._manager.close()


def error_line(error: BaseException) -> str:
    """An exception as one short line."""
    return " ".join(str(error).split())[:300] or type(error).__name__


def is_disk_full(error: BaseException) -> bool:
    """Whether an exception (or one it came from) is a write that found no space left."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            return True
        text = str(error)
        if "No space left on device" in text or "os_error_code='28'" in text:
            return True
        error = error.__cause__ or error.__context__
    return False


def tree_bytes(*trees) -> int:
    """Bytes of every array in the pytrees (a checkpoint's size, give or take metadata)."""
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for tree in trees for x in jax.tree.leaves(tree)))


def _all_processes_ok(ok: bool) -> bool:
    """Whether `ok` holds on every process (always just `ok` in a single process)."""
    if jax.process_count() == 1:
        return ok
    flags = multihost_utils.process_allgather(np.array([ok], np.int32))
    return bool(np.all(flags))


def abstract_like(tree) -> Any:
    """ShapeDtypeStructs (with shardings) of a pytree of arrays."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)


def load_params(params_dir: str | Path) -> dict[str, Any]:
    """A checkpoint's parameters as NumPy arrays, on any machine (plain Orbax calls; the
    topology the checkpoint was saved on does not matter). `params_dir` is
    <workdir>/checkpoints/<step>/params."""
    params_dir = Path(params_dir).absolute()  # Orbax misreads relative paths' metadata
    checkpointer = ocp.PyTreeCheckpointer()
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
                            checkpointer.metadata(params_dir).item_metadata.tree)
    return checkpointer.restore(params_dir, restore_args=as_numpy)
