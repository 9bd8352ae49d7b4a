"""Child processes that do not outlive their parent."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """In a child process (a supervised run, a Grain worker): be killed when the parent dies
    (a SIGKILL of the parent ends the child too). Linux ties the signal to the parent's thread
    that started the child: a Grain worker ends with the reading thread that started it, which
    lives as long as the run's reading does."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the child outlives a killed parent
