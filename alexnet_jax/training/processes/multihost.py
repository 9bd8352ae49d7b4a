"""Coordination of the processes of a multi-process run (jax.distributed).

A lost process (killed, crashed, its machine gone) ends the run on every survivor with one
message and exit code 3 (LOST_PROCESS_EXIT_CODE) instead of JAX's abort: an error of a
collective or barrier that says a peer is gone is reported by the training process itself; when
JAX's coordination service notices the silent peer (after `heartbeat_timeout_seconds`, the flag
--heartbeat_timeout_seconds) and aborts the process, the supervising parent process
(supervisor.py) reports it. The same command on every process then resumes from the last
complete checkpoint.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Callable, TypeVar

import jax
import numpy as np
from jax.experimental import multihost_utils

from alexnet_jax.common.errors import LOST_PROCESS_EXIT_CODE, error_chain
from alexnet_jax.training.processes import supervisor

T = TypeVar("T")
# What JAX's runtime says when a peer process is gone (collectives, barriers, heartbeats).
LOST_PEER_PATTERNS = ("heartbeat", "Connection closed by peer", "Connection reset by peer",
                      "Gloo", "Barrier failed", "unhealthy", "CoordinationService", "UNAVAILABLE")


def chief_only(work: Callable[[], None], name: str) -> None:
    """Run `work` on process 0 alone (e.g. moving files every process's checkpoint manager
    reads); the others wait for it, and are released even if it fails."""
    if jax.process_count() == 1:
        work()
        return
    try:
        if jax.process_index() == 0:
            work()
    finally:
        multihost_utils.sync_global_devices(name)


def chief_first(work: Callable[[], T], name: str) -> T:
    """Run `work` on process 0 first (e.g. preparing a dataset or caching statistics), then on
    the others, which then find its results on disk instead of racing to write them."""
    if jax.process_count() == 1:
        return work()
    if jax.process_index() == 0:
        try:
            result = work()
        finally:  # the others must not wait forever if process 0 fails: they fail the same way
            multihost_utils.sync_global_devices(name)
        return result
    multihost_utils.sync_global_devices(name)
    return work()


def gather(array: jax.Array) -> np.ndarray:
    """The whole value of an array that may be spread over processes (one column's kernels
    on each, say), on every process. A collective when it is spread: every process calls it."""
    if array.is_fully_addressable or array.is_fully_replicated:
        return np.asarray(jax.device_get(array))
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def initialize(address: str, count: int, index: int, heartbeat_timeout_seconds: int) -> None:
    """jax.distributed.initialize with the run's heartbeat timeout."""
    jax.distributed.initialize(coordinator_address=address, num_processes=count,
                               process_id=index,
                               heartbeat_timeout_seconds=heartbeat_timeout_seconds)


# A barrier that timed out with every process alive (a slow save, a slow disk) says so; its
# text names the coordination service too, but no process is lost and a rerun would not help.
TIMEOUT_NOT_LOSS = "DEADLINE_EXCEEDED"


def is_lost_peer(error: BaseException) -> bool:
    """Whether an error of a multi-process run, or one it came from, says that another process
    is gone. (The count is asked last: before jax.distributed starts, asking would start a
    single-process runtime.)"""
    return any(any(pattern in text for pattern in LOST_PEER_PATTERNS)
               and TIMEOUT_NOT_LOSS not in text
               for text in map(str, error_chain(error))) and jax.process_count() > 1


def live_processes(timeout: float) -> set[int] | None:
    """The processes JAX's coordination service counts as alive: it answers once the silent
    ones are declared dead (at most the heartbeat timeout); None if it does not answer."""
    from jax._src import distributed  # noqa: PLC0415 - the runtime's client, no public API

    client, answer = distributed.global_state.client, {}

    def ask():
        try:
            live = client.get_live_nodes(list(range(jax.process_count())))
            answer["live"] = set(live.keys() if isinstance(live, dict) else live)
        except Exception:  # noqa: BLE001 - no answer is an answer too
            pass

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    thread.join(timeout)
    return answer.get("live")


def lost_process_message(detail: str, live: set[int] | None = None) -> str:
    """One paragraph: which process was lost (from JAX's message or the live set) and how to
    resume."""
    me = jax.process_index()
    found = supervisor.named_processes(detail, me)
    if not found and live is not None:
        found = sorted(set(range(jax.process_count())) - live - {me})
    return supervisor.lost_process_message(found, me, jax.process_count(),
                                           " ".join(detail.split())[:300])


def exit_lost_process(error: BaseException, heartbeat_timeout: float) -> None:
    """Print the lost-process message and leave with LOST_PROCESS_EXIT_CODE (JAX's orderly
    shutdown would wait for the lost process, then abort). When the error does not say which
    process is gone, ask the coordination service first (at most the heartbeat timeout)."""
    # the runtime's own words first: a library's wrapper (Orbax's barrier timeout) adds little
    detail = " ".join(str(link) for link in reversed(list(error_chain(error))))
    live = None
    if not supervisor.named_processes(detail, jax.process_index()):
        live = live_processes(heartbeat_timeout + 5)
    print(f"error: {lost_process_message(detail, live)}", file=sys.stderr, flush=True)
    os._exit(LOST_PROCESS_EXIT_CODE)
