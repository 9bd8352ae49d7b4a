"""A thin parent process for each process of a multi-process run: it runs the training command
as its child and turns JAX's abort on a lost peer into one message and exit code 3.

When a process of a jax.distributed run dies, JAX's coordination service tells the survivors
after the heartbeat timeout, and each survivor's runtime then terminates its process from C++
(SIGABRT, pages of logs), which Python cannot catch. The parent forwards the child's output as
it comes, holds back that crash dump, and reports what happened. Signals to the parent
(SIGTERM, SIGINT; SIGHUP as SIGTERM) are passed to the child, which saves a checkpoint and exits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from typing import Callable

from alexnet_jax.common.child_process import die_with_parent
from alexnet_jax.common.errors import LOST_PROCESS_EXIT_CODE

SUPERVISED_ENV = "ALEXNET_JAX_SUPERVISED"
# The first line of JAX's report that a peer is gone; from here on the child's output is the
# crash dump, held back.
CRASH_MARKERS = (b"Use error polling to propagate the following error",
                 b"Polled an error from coordination service",
                 b"Terminating process because the JAX distributed service")
LOST_PEER_EVIDENCE = CRASH_MARKERS + (b"heartbeat timeout", b"stopped sending heartbeats")


def is_supervised() -> bool:
    return os.environ.get(SUPERVISED_ENV) == "1"


def named_processes(text: str, me: int) -> list[int]:
    """The process indices JAX's messages name (its tasks), this process excluded: "Task 1",
    "task:1", or the coordination service's list of silent tasks, one index a line ("The
    following tasks are unhealthy (stopped sending heartbeats):\n1\n")."""
    named = {int(n) for n in re.findall(r"[Tt]ask:?\s*(\d+)", text)}
    silent_list = r"stopped sending heartbeats\):[ \t]*\n((?:[ \t]*\d+[ \t]*(?:\n|$))+)"
    for listing in re.findall(silent_list, text):
        named.update(int(n) for n in listing.split())
    return sorted(named - {me})


def lost_process_message(lost: list[int], me: int, count: int | None, cause: str) -> str:
    """One paragraph: which process was lost, why this one stopped, and how to resume."""
    who = f"process {', '.join(map(str, lost))}" if lost else "another process"
    size = f"this {count}-process run" if count else "this multi-process run"
    return (f"{who} of {size} was lost (killed, crashed or unreachable), so process {me} "
            f"stopped too ({cause}). Run the same command on every process again: the run "
            "resumes from its last complete checkpoint.")


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def forward_stop_signals(child: Callable[[], subprocess.Popen | None]):
    """A signal handler that passes SIGTERM and SIGINT to the running child (which saves a
    checkpoint and exits) and a hang-up as SIGTERM (the trainer does not handle SIGHUP)."""

    def forward(signum, frame):
        del frame
        process = child()
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    return forward


def run_child(argv: list[str], me: int, count: int | None, heartbeat_timeout: int) -> int:
    """Run `python -m alexnet_jax.main argv...` as a child; its exit code, or 3 for a lost peer."""
    env = dict(os.environ, **{SUPERVISED_ENV: "1", "PYTHONUNBUFFERED": "1"})
    # In its own process group, the child hears a terminal's Ctrl-C once, through the parent (a
    # second SIGINT would mean "stop at once", without a checkpoint).
    child = subprocess.Popen([sys.executable, "-m", "alexnet_jax.main", *argv], env=env,
                             stderr=subprocess.PIPE, preexec_fn=die_with_parent,
                             process_group=0)
    forward = forward_stop_signals(lambda: child)

    for signum in STOP_SIGNALS:
        signal.signal(signum, forward)
    out = sys.stderr.buffer
    pending, tail, holding = b"", b"", False
    while chunk := child.stderr.read1(65536):
        pending += chunk
        pieces = re.split(rb"(?<=[\r\n])", pending)
        pending = pieces.pop()  # an incomplete line waits for the rest
        for piece in pieces:
            tail = (tail + piece)[-200_000:]
            holding = holding or any(marker in piece for marker in CRASH_MARKERS)
            if not holding or piece.startswith(b"error: "):  # the child's own message passes
                out.write(piece)
        out.flush()
    if pending and not holding:
        out.write(pending)
        out.flush()
    tail += pending
    code = child.wait()
    if code != 0 and code != LOST_PROCESS_EXIT_CODE and any(e in tail for e in LOST_PEER_EVIDENCE):
        lost = named_processes(tail.decode(errors="replace"), me)
        cause = (f"JAX's coordination service stopped hearing from it: heartbeat timeout "
                 f"{heartbeat_timeout} s, --heartbeat_timeout_seconds")
        print(f"error: {lost_process_message(lost, me, count, cause)}", file=sys.stderr,
              flush=True)
        return LOST_PROCESS_EXIT_CODE
    return code if code >= 0 else 128 - code  # a signal's death as the shell reports it
