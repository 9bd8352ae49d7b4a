"""Orbax checkpoints of a run: parameters, optimizer state and the run's progress.

Layout (plain Orbax, readable without this project):
    <workdir>/checkpoints/<step>/params/     {layer: {"kernel", "bias"}} arrays
    <workdir>/checkpoints/<step>/opt_state/  the optimizer state (velocity, learning rate)
    <workdir>/checkpoints/<step>/progress/   JSON: step, epoch, schedule state, config fingerprint
A checkpoint directory appears only once complete (Orbax writes to a temporary name and renames),
so a run killed at any moment leaves the previous checkpoints intact.

Faults: a checkpoint that cannot be restored (truncated or damaged files) is reported and moved
to <workdir>/checkpoints_unreadable/ (never deleted), and the next older one is tried
(recovery.py). A save
that fails because the disk is full removes its partial directory and ends the run with a
message (UserError) naming the space needed and the newest complete checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.experimental import multihost_utils

from alexnet_jax.common.disk import directory_bytes, format_bytes, free_bytes
from alexnet_jax.common.errors import UserError, error_chain
from alexnet_jax.training.checkpoints.aside import SetAside

UNREADABLE_DIR = "checkpoints_unreadable"
TMP_MARKER = ".orbax-checkpoint-tmp"
LISTING_TRIES = 5  # a training run removes at most a few checkpoints a save


class Checkpointer:
    """Saves when asked; keeps the last `keep` checkpoints and the one with the lowest
    validation top-1 error (among checkpoints saved with `top1_error`; ties: the later)."""

    def __init__(self, directory: Path, keep: int, asynchronous: bool = True,
                 owner: bool = False):
        """`owner`: the training run that holds the workdir (aside.SetAside)."""
        self.directory = Path(directory).absolute()
        self._keep, self._asynchronous = keep, asynchronous
        self.bytes_needed = 0  # one checkpoint's size, for the disk-space checks (set by the run)
        self._aside = SetAside(self.directory, owner)
        self._manager = open_manager(self.directory, self._keep, self._asynchronous)
        self._last_saved = self._manager.latest_step()
        self._failed = False

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, params, opt_state, progress: dict[str, Any],
             top1_error: float | None = None, replace: bool = False) -> bool:
        """Start saving (asynchronously); whether a checkpoint is written at `step`.
        `top1_error` (validation) makes it a candidate for "best". `replace` writes again one
        already at `step` (an epoch's end done after a resume), the old one kept aside until
        the new one is on disk (a run killed in between gets the old one back)."""
        if step == self._last_saved and not replace:
            return False
        if replace and step in self.all_steps():
            self.wait()
            self._aside.move(step)
            self.reopen()  # the manager forgets the step it no longer has
        if self._last_saved is None:
            warn_if_short_of_space(self.directory, self.bytes_needed)
        metrics = None if top1_error is None else {"top1_error": float(top1_error)}
        saved = self._guard(lambda: self._manager.save(
            step, args=_state_args(ocp.args.StandardSave, params, opt_state, progress),
            metrics=metrics, force=True))
        if saved:
            self._last_saved = step
            self._aside.note_saved(step)
        return saved

    def restore_progress(self, step: int) -> dict[str, Any]:
        """Only the JSON progress record of checkpoint `step`."""
        return self._manager.restore(step, args=ocp.args.Composite(
            progress=ocp.args.JsonRestore()))["progress"]

    def restore(self, step: int, abstract_params, abstract_opt_state
                ) -> tuple[Any, Any, dict[str, Any]]:
        """(params, opt_state, progress) of checkpoint `step`, laid out like the abstract
        targets (jax.ShapeDtypeStruct leaves carrying shardings)."""
        restored = self._manager.restore(step, args=_state_args(
            ocp.args.StandardRestore, abstract_params, abstract_opt_state))
        return restored["params"], restored["opt_state"], restored["progress"]

    def reopen(self) -> None:
        """Forget what the manager knew (after checkpoints were moved away) and read again."""
        self._manager.close()
        self._manager = open_manager(self.directory, self._keep, self._asynchronous)
        self._last_saved = self._manager.latest_step()

    def _guard(self, action: Callable[[], Any]) -> Any:
        """Run an Orbax call; a full disk becomes a UserError after the partial checkpoint is
        removed (the run then stops, and the same command resumes once space is freed)."""
        try:
            return action()
        except Exception as error:  # noqa: BLE001 - only a full disk is handled here
            if not is_disk_full(error):
                raise
            self._failed = True
            error, self.bytes_needed = after_full_disk(self._manager, self.directory,
                                                       self.bytes_needed)
            raise error from None

    def wait(self) -> None:
        """Block until asynchronous saves are on disk (and describe their items)."""
        self._guard(self._manager.wait_until_finished)
        self._aside.drop_if_replaced()
        if self._aside.owner and jax.process_index() == 0:  # the training run alone writes
            describe_finished(self.directory)

    def close(self) -> None:
        if self._failed:  # after a failed save, only release what is held
            with contextlib.suppress(Exception):  # the failure is already reported
                self._manager.close()
            return
        self.wait()
        self._manager.close()


ITEM_METADATA = "_CHECKPOINT_METADATA"


def step_on_disk(directory: Path, step: int) -> bool:
    """Whether checkpoint `step` is in `directory` now (a reader's listing may be older)."""
    return (Path(directory) / str(step)).is_dir()


def describe_finished(directory: Path) -> None:
    """describe_items of every checkpoint in `directory`."""
    for step_dir in Path(directory).iterdir():
        if step_dir.name.isdigit():
            describe_items(step_dir)


def describe_items(step_dir: Path) -> None:
    """Give a finished checkpoint's array items (params, opt_state) the metadata file Orbax
    writes beside an item saved alone, so that the plain Orbax recipe that reads
    <step>/params (README, load_params) finds it instead of warning "Metadata file does not
    exist". Its content is the step's own metadata for that item; written atomically."""
    step_file = Path(step_dir) / ITEM_METADATA
    try:
        step_metadata = json.loads(step_file.read_text())
    except (OSError, ValueError):
        return  # not finished (or not Orbax's): nothing to describe yet
    handlers = step_metadata.get("item_handlers") or {}
    for item in ("params", "opt_state"):
        target = Path(step_dir) / item / ITEM_METADATA
        if item not in handlers or target.exists() or not target.parent.is_dir():
            continue
        partial = target.with_name(ITEM_METADATA + ".partial")
        partial.write_text(json.dumps({**step_metadata, "item_handlers": handlers[item],
                                       "metrics": {}}))
        os.replace(partial, target)


def _state_args(kind, params, opt_state, progress=None) -> ocp.args.Composite:
    """A checkpoint's three items for Orbax: `kind` (StandardSave or StandardRestore) of the
    arrays, and the progress record (to save, or None to restore)."""
    return ocp.args.Composite(
        params=kind(params), opt_state=kind(opt_state),
        progress=ocp.args.JsonRestore() if progress is None else ocp.args.JsonSave(progress))


def open_manager(directory: Path, keep: int, asynchronous: bool) -> ocp.CheckpointManager:
    """Orbax's manager, keeping the last `keep` checkpoints and the best one."""
    keep_best = ocp.checkpoint_managers.BestN(
        get_metric_fn=lambda metrics: -metrics["top1_error"], n=1,
        keep_checkpoints_without_metrics=False)
    policy = ocp.checkpoint_managers.AnyPreservationPolicy(
        [ocp.checkpoint_managers.LatestN(keep), keep_best])
    # best_fn makes Orbax write each checkpoint's metrics to disk (and read them back when the
    # manager is reopened): without it a resumed run's policy sees no metrics on the old
    # checkpoints and its next save deletes the best one
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, create=True, best_fn=lambda m: m["top1_error"],
        best_mode="min", enable_async_checkpointing=asynchronous)
    for _ in range(LISTING_TRIES - 1):
        try:
            return ocp.CheckpointManager(directory, options=options)
        except FileNotFoundError:
            # a reader beside a training run (an evaluation of a busy workdir) listed a
            # checkpoint that the run's keep policy removed before Orbax read its time: the
            # listing is stale, not the checkpoint damaged, so list again
            logging.info("a checkpoint in %s was removed while it was listed; listing again",
                         directory)
    return ocp.CheckpointManager(directory, options=options)   # the last try raises


def after_full_disk(manager: ocp.CheckpointManager, directory: Path,
                    bytes_needed: int) -> tuple[UserError, int]:
    """After a save found the disk full: the partial checkpoint removed, the error to report,
    and a checkpoint's size as measured on this disk."""
    try:  # no save may still be writing when its partial directory is removed
        manager.wait_until_finished()
    except Exception:  # noqa: BLE001 - the same full disk: already being reported
        pass
    removed = remove_partial_checkpoints(directory)
    newest = manager.latest_step()
    if newest is not None:  # what one checkpoint really takes on this disk
        bytes_needed = max(bytes_needed, directory_bytes(directory / str(newest)))
    return full_disk_error(directory, bytes_needed, removed, newest), bytes_needed


def warn_if_short_of_space(directory: Path, bytes_needed: int) -> None:
    """A warning before the first save when the disk cannot hold one more checkpoint."""
    free = free_bytes(directory)
    if bytes_needed and free < bytes_needed:
        logging.warning("the disk holding %s has %s free, but a checkpoint of this run needs "
                        "about %s: saving it will fail. Free space now.", directory,
                        format_bytes(free), format_bytes(bytes_needed))


def remove_partial_checkpoints(directory: Path) -> list[str]:
    """Delete the temporary directories of checkpoints that were never completed (process 0)."""
    removed = []
    if jax.process_index() == 0:
        for path in sorted(directory.glob(f"*{TMP_MARKER}*")):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def full_disk_error(directory: Path, bytes_needed: int, removed: list[str],
                    newest: int | None) -> UserError:
    """One paragraph: where the space is missing, how much a checkpoint needs, what was removed
    and what is safe, and how to resume."""
    free = free_bytes(directory)
    return UserError(
        f"no space left on the device holding {directory} ({format_bytes(free)} free): a "
        f"checkpoint of this run needs about {format_bytes(bytes_needed)}. "
        + (f"The partial checkpoint ({', '.join(removed)}) was removed. " if removed else "")
        + (f"The newest complete checkpoint is step {newest} ({directory / str(newest)}); "
           if newest is not None else "There is no complete checkpoint yet; ")
        + "free space on that device, then run the same command again to resume.")


def error_line(error: BaseException) -> str:
    """An exception as one short line."""
    return " ".join(str(error).split())[:300] or type(error).__name__


def is_disk_full(error: BaseException) -> bool:
    """Whether an exception (or one it came from) is a write that found no space left."""
    return any((isinstance(link, OSError) and link.errno == errno.ENOSPC)
               or "No space left on device" in str(link) or "os_error_code='28'" in str(link)
               for link in error_chain(error))


def tree_bytes(*trees) -> int:
    """Bytes of every array in the pytrees (a checkpoint's size, give or take metadata)."""
    return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize
                   for tree in trees for x in jax.tree.leaves(tree)))


def all_processes_ok(ok: bool) -> bool:
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
