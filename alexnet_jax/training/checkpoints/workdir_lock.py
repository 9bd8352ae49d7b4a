"""One run per workdir: an advisory lock (flock) on <workdir>/.run.lock, held while a run trains.

The kernel releases a flock when its process ends, however it ends (SIGKILL, a crash, a lost
machine's reboot), so a dead run never leaves a lock that blocks the next one. The lock file
records the holder (host, pid, start time) for the message a second run gets. `--mode=eval`
takes no lock: reading checkpoints while a run trains is allowed and does not disturb it. In a
multi-process run process 0 holds the lock for all processes, which share the workdir.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from alexnet_jax.common.errors import UserError

LOCK_FILE = ".run.lock"


def holder(workdir: Path) -> str | None:
    """Who holds the workdir's lock ("pid P on host H, started ..."), or None. Changes nothing."""
    path = Path(workdir) / LOCK_FILE
    if not path.is_file():
        return None
    with path.open("r") as handle:
        try:
            # shared: the processes of one multi-process run probe at the same moment, and
            # shared probes never block each other, only a running run's exclusive lock
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "another process"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


def in_use_error(workdir: Path, who: str) -> UserError:
    return UserError(
        f"the workdir {workdir} is in use by another run ({who}). Two runs on one workdir would "
        "overwrite each other's checkpoints and logs: wait for that run to finish, stop it "
        "(SIGTERM or Ctrl-C saves a checkpoint; the same command then resumes it), or choose "
        "another --workdir. Evaluating it meanwhile (--mode=eval) is fine.")


class WorkdirLock:
    """The lock of one workdir, taken with `acquire` and kept until `release` (or exit)."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self._handle = None

    def acquire(self) -> None:
        """Take the lock without writing anything; UserError naming the holder if it is held."""
        handle = (self.workdir / LOCK_FILE).open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            who = handle.read().strip() or "another process"
            handle.close()
            raise in_use_error(self.workdir, who) from None
        self._handle = handle

    def record_holder(self) -> None:
        """Write who holds the lock (once the run is sure to train)."""
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()} on host {socket.gethostname()}, started "
                           f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}\n")
        self._handle.flush()

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
