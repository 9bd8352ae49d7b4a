"""Coordination of the processes of a multi-process run (jax.distributed)."""

from __future__ import annotations

from typing import Callable, TypeVar

import jax
from jax.experimental import multihost_utils

T = TypeVar("T")


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
