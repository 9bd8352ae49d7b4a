"""A thin parent process for each process of a multi-process run: it runs the training command
as its child and turns JAX's abort on a lost peer into one message and exit code 3.

When a process of a jax.distributed run dies, JAX's coordination service tells the survivors
after the heartbeat timeout, and each survivor's runtime then terminates its process from C++
(SIGABRT, pages of logs), which Python cannot catch. The parent forwards the child's output as
it comes, holds back that crash dump, and reports what happened. Signals to the parent
(SIGTERM, SIGINT, SIGHUP) are passed to the child, which saves a checkpoint and exits.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

from alexnet_jax.multihost import LOST_PROCESS_EXIT_CODE

SUPERVISED_ENV = "ALEXNET_JAX_SUPERVISED"
# The first line of JAX's report that a peer is gone; from here on the child's output is the
# crash dump, held back.
CRASH_MARKERS = (b"Use error polling to propagate the following error",
                 b"Polled an error from coordination service",
                 b"Terminating process because the JAX distributed service")
LOST_PEER_EVIDENCE = CRASH_MARKERS + (b"heartbeat timeout", b"stopped sending heartbeats")


def is_supervised() -> bool:
    return os.environ.get(SUPERVISED_ENV) == "1"


def lost_processes(output: bytes, me: int) -> list[int]:
    """The process indices JAX's messages name as lost (tasks), this process excluded."""
    found = {int(n) for n in re.findall(rb"(?:task:|[Tt]ask )(\d+)", output)}
    return sorted(found - {me})


def lost_message(output: bytes, me: int, count: int | None, heartbeat_timeout: int) -> str:
    lost = lost_processes(output, me)
    who = f"process {', '.join(map(str, lost))}" if lost else "another process"
    size = f"this {count}-process run" if count else "this multi-process run"
    return (f"{who} of {size} was lost (killed, crashed or unreachable): JAX's coordination "
            f"service stopped hearing from it (heartbeat timeout {heartbeat_timeout} s, "
            f"--heartbeat_timeout_seconds), so process {me} stopped. Run the same command on "
            "every process again: the run resumes from its last complete checkpoint.")


def _die_with_parent() -> None:
    """In the child: be killed when the parent dies (SIGKILL of the parent kills the run)."""
    try:
        import ctypes  # noqa: PLC0415

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the child outlives a killed parent


def run_child(argv: list[str], me: int, count: int | None, heartbeat_timeout: int) -> int:
    """Run `python -m alexnet_jax.main argv...` as a child; its exit code, or 3 for a lost peer."""
    env = dict(os.environ, **{SUPERVISED_ENV: "1", "PYTHONUNBUFFERED": "1"})
    child = subprocess.Popen([sys.executable, "-m", "alexnet_jax.main", *argv], env=env,
                             stderr=subprocess.PIPE, preexec_fn=_die_with_parent)

    def forward(signum, frame):
        del frame
        if child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
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
        print(f"error: {lost_message(tail, me, count, heartbeat_timeout)}", file=sys.stderr,
              flush=True)
        return LOST_PROCESS_EXIT_CODE
    return code if code >= 0 else 128 - code  # a signal's death as the shell reports it
