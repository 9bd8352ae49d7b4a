"""SIGTERM / SIGINT: finish the current step, save a checkpoint, exit cleanly."""

from __future__ import annotations

import signal
import threading


class StopRequest:
    """Set by SIGTERM or SIGINT while installed; a second SIGINT interrupts at once."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum, frame):
        del frame
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
