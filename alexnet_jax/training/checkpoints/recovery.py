"""Resuming past damaged checkpoints: the newest checkpoint that restores completely on every
process is used; the unreadable ones newer than it are reported and moved to
<workdir>/checkpoints_unreadable/<step>-<time>/ (never deleted)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Callable

import jax
from absl import logging
from jax.experimental import multihost_utils

from alexnet_jax.common.errors import UserError
from alexnet_jax.training.checkpoints.checkpointing import (UNREADABLE_DIR, Checkpointer,
                                                            all_processes_ok, error_line,
                                                            step_on_disk)


def restore_newest(checkpointer: Checkpointer, abstract_params, abstract_opt_state,
                   check_progress: Callable[[int, dict[str, Any]], None],
                   set_aside: bool = True) -> tuple[int, tuple[Any, Any, dict]] | None:
    """The newest checkpoint that restores completely: (step, (params, opt_state,
    progress)), or None when there is none. `check_progress(step, progress)` may refuse a
    checkpoint (UserError, e.g. another model's). Unreadable checkpoints are reported; once
    an older one has restored, they are moved to checkpoints_unreadable/ (with
    `set_aside`). When none restores, nothing is moved and UserError says so."""
    failures: list[tuple[int, str]] = []
    for step in sorted(checkpointer.all_steps(), reverse=True):
        try:
            progress, cause = checkpointer.restore_progress(step), None
        except Exception as error:  # noqa: BLE001 - any failure: try an older checkpoint
            progress, cause = None, error_line(error)
        if not all_processes_ok(cause is None):  # all processes go on from the same step
            if removed_meanwhile(checkpointer, step):
                continue
            failures.append((step, cause or "another process could not read its progress"))
            logging.warning("checkpoint %s cannot be restored (%s)",
                            checkpointer.directory / str(step), failures[-1][1])
            continue
        check_progress(step, progress)
        try:
            restored = checkpointer.restore(step, abstract_params, abstract_opt_state)
            cause = None
        except Exception as error:  # noqa: BLE001
            restored, cause = None, error_line(error)
        if all_processes_ok(cause is None):
            if failures:
                moved = move_aside(checkpointer, [s for s, _ in failures]) if set_aside else []
                logging.warning(
                    "resuming from checkpoint %d, the newest that restores completely; "
                    "unreadable: %s", step, "; ".join(
                        f"{checkpointer.directory / str(s)} ({c})" for s, c in failures)
                    + (f" (moved to {', '.join(map(str, moved))}, not deleted)" if moved
                       else ""))
            return step, restored
        if removed_meanwhile(checkpointer, step):
            continue
        failures.append((step, cause or "another process could not restore its part"))
        logging.warning("checkpoint %s cannot be restored (%s)",
                        checkpointer.directory / str(step), failures[-1][1])
    if failures:
        raise UserError(
            f"no checkpoint in {checkpointer.directory} can be restored: " + "; ".join(
                f"step {s}: {c}" for s, c in failures)
            + ". Nothing was moved or deleted. Put a good copy of a checkpoint back, or "
            "start a new run with another --workdir.")
    return None


def removed_meanwhile(checkpointer: Checkpointer, step: int) -> bool:
    """Whether checkpoint `step`, which failed to restore, is gone from disk for every
    process: a training run beside this reader (an evaluation of a busy workdir) removed it
    under its keep policy. Not a damaged checkpoint: nothing to report or move."""
    gone = all_processes_ok(not step_on_disk(checkpointer.directory, step))
    if gone:
        logging.info("checkpoint %s was removed by the training run while it was read; "
                     "trying an older one", checkpointer.directory / str(step))
    return gone


def move_aside(checkpointer: Checkpointer, steps: list[int]) -> list[Path]:
    """Move checkpoints to <workdir>/checkpoints_unreadable/<step>-<time>/ (process 0)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    root = checkpointer.directory.parent / UNREADABLE_DIR
    targets = [root / f"{step}-{stamp}" for step in steps]
    multihost_utils.sync_global_devices("set_aside_before")
    if jax.process_index() == 0:
        for step, target in zip(steps, targets):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(checkpointer.directory / str(step)), str(target))
    multihost_utils.sync_global_devices("set_aside_after")
    checkpointer.reopen()  # forget the moved steps
    return targets
