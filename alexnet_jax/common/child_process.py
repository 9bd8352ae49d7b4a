"""Child processes that do not outlive their parent."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """In a child process (a supervised run): be killed when the parent dies (a SIGKILL of the
    parent ends the child too). Linux ties the signal to the parent's thread that started the
    child, so a child started from a short-lived thread would die with that thread (the reading
    workers of data/batch_pool.py end when their pipe closes instead)."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the child outlives a killed parent
