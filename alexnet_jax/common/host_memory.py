"""The host allocator of a CPU training process: why it restarts itself once at start.

XLA:CPU allocates every step's temporary buffers afresh (about 2 GB in one block at batch 64,
4 GB at 128, 224 pixels) and frees them when the step ends. glibc's malloc serves a block that
large with a fresh `mmap` and returns it with `munmap`, so the kernel hands the block out again,
page by page, at every step: about a million minor faults a step at batch 64, and on the
virtual machine of docs/performance.md (where memory the guest frees likely goes back to the
hypervisor) more system time than the step's arithmetic. No `mallopt` from Python can change
it: the block is freed and mapped by XLA's own threads, and glibc reads its settings once, when
it starts.

What the process restarts with (`GLIBC_TUNABLES`, glibc's own switches), `KEEP_FREED_MEMORY`:
one malloc arena (`arena_max=1`: the main arena is the only one that can grow a block this
large without a mapping of its own), no mappings for large blocks (`mmap_max=0`), and no
trimming of the heap's top (`trim_threshold`): the next step then reuses the memory the last one
freed, with no fault at all once the heap has grown to the step's needs. The price is memory:
the heap keeps its high-water mark, about three of the step's temporary blocks (12 GB resident
instead of 5 at batch 128, 224 pixels; docs/performance.md). Where the kernel gives
transparent huge pages on request (THP mode `madvise`) and glibc has the tunable (2.35 and
later), `glibc.malloc.hugetlb=1` is added too, so the heap's growth faults in by 2 MB.

Tunables are read once, when glibc starts, so `restart_with_host_allocator` restarts the process
(`os.execve`: the same PID, arguments and open descriptors) with them added to `GLIBC_TUNABLES`,
before anything else has run. It does so only where it helps and nobody chose otherwise: Linux
with glibc 2.26 or later, JAX on the CPU (no accelerator plugin installed, or
`JAX_PLATFORMS=cpu`: on an accelerator the step's buffers live on the device), and
`GLIBC_TUNABLES` naming none of these tunables (a user's own setting wins, whole:
`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` keeps glibc's default). Every run's first record carries
`state()` (common/provenance.py), and its training lines the process's peak resident memory.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import resource
import sys
from pathlib import Path
from typing import Mapping

TUNABLES_VARIABLE = "GLIBC_TUNABLES"
# the next step reuses what the last one freed: one arena, no mmap, no trimming (docstring)
KEEP_FREED_MEMORY = {"glibc.malloc.arena_max": "1", "glibc.malloc.mmap_max": "0",
                     "glibc.malloc.trim_threshold": str(1 << 40)}
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
FIRST_GLIBC_WITH_TUNABLES = (2, 26)
FIRST_GLIBC_WITH_HUGE_PAGES = (2, 35)
# distributions that give JAX a backend other than the CPU: on such a host the step's buffers
# live on the accelerator, and the CPU's allocator is left as glibc sets it
ACCELERATOR_PLUGIN_PREFIXES = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu")


def transparent_huge_pages_mode(mode_file: Path = THP_MODE_FILE) -> str | None:
    """The kernel's THP mode (the bracketed word of `always [madvise] never`); None where the
    kernel has no such file."""
    try:
        text = mode_file.read_text()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else None


def glibc_version() -> tuple[int, ...] | None:
    """glibc's version as numbers; None under another C library or platform."""
    library, version = platform.libc_ver()
    if library != "glibc" or not version:
        return None
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return None


def jax_runs_on_cpu(environ: Mapping[str, str]) -> bool:
    """Whether this process's JAX will compute on the CPU: `JAX_PLATFORMS` says only cpu, or no
    accelerator plugin is installed (decided before JAX is imported, which would be too late)."""
    platforms = [name.strip() for name in environ.get("JAX_PLATFORMS", "").split(",")
                 if name.strip()]
    if platforms:
        return platforms == ["cpu"]
    # JAX finds its PJRT plugins through this entry-point group and the `jax_plugins` namespace
    # package (Intel's, AWS Neuron's and future ones too); the names cover older plugins
    if any(True for _ in importlib.metadata.entry_points(group="jax_plugins")):
        return False
    namespace = importlib.util.find_spec("jax_plugins")
    if namespace is not None and any(pkgutil.iter_modules(
            namespace.submodule_search_locations or [])):
        return False
    names = {(distribution.metadata["Name"] or "").lower()
             for distribution in importlib.metadata.distributions()}
    return not any(name.startswith(ACCELERATOR_PLUGIN_PREFIXES) for name in names)


def allocator_tunables() -> dict[str, str]:
    """The tunables a CPU training process runs with on this host (the module's docstring):
    `KEEP_FREED_MEMORY`, plus huge pages where glibc and the kernel give them on request."""
    tunables = dict(KEEP_FREED_MEMORY)
    version = glibc_version()
    if (version is not None and version >= FIRST_GLIBC_WITH_HUGE_PAGES
            and transparent_huge_pages_mode() == "madvise"):
        tunables[HUGE_PAGES_TUNABLE] = "1"
    return tunables


def tunables_for_training(environ: Mapping[str, str]) -> str | None:
    """The `GLIBC_TUNABLES` value this process should restart with, or None where it should
    not restart: not glibc 2.26 or later, JAX not on the CPU, or `GLIBC_TUNABLES` already
    naming one of ours (set by the restart, or by the user, whose choice wins)."""
    tunables = environ.get(TUNABLES_VARIABLE, "")
    named = {item.partition("=")[0] for item in tunables.split(":") if item}
    if named & {*KEEP_FREED_MEMORY, HUGE_PAGES_TUNABLE}:
        return None
    version = glibc_version()
    if version is None or version < FIRST_GLIBC_WITH_TUNABLES or not jax_runs_on_cpu(environ):
        return None
    return ":".join(filter(None, (tunables, as_tunables_text(allocator_tunables()))))


def as_tunables_text(tunables: Mapping[str, str]) -> str:
    """Tunables as `GLIBC_TUNABLES` writes them: `name=value` pairs joined by colons."""
    return ":".join(f"{name}={value}" for name, value in tunables.items())


def restart_with_host_allocator() -> None:
    """Restart this process with the host allocator of `allocator_tunables()`, where that helps
    and nobody chose otherwise (see the module's docstring); returns only where no restart is
    due. Call it first thing in a program's entry point: the process's work so far is lost at
    the restart."""
    tunables = tunables_for_training(os.environ)
    if tunables is None:
        return
    # sys.executable is empty when Python was started by a bare name without a PATH; the
    # kernel's link to this process's binary serves then (argv, and so the venv, unchanged)
    executable = sys.executable or "/proc/self/exe"
    if not os.access(executable, os.X_OK):
        return
    for stream in (sys.stdout, sys.stderr):   # None where the descriptor was closed
        if stream is not None:
            stream.flush()
    try:
        os.execve(executable, sys.orig_argv, {**os.environ, TUNABLES_VARIABLE: tunables})
    except OSError:
        return   # this process goes on with glibc's default: slower, not wrong


def peak_resident_gb() -> float:
    """This process's peak resident memory so far, in GB (the kept heap's high-water mark)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # Linux: kilobytes


def state() -> dict[str, str | None]:
    """What this process's host allocator runs with, for a run's provenance."""
    return {"glibc_tunables": os.environ.get(TUNABLES_VARIABLE),
            "transparent_hugepage": transparent_huge_pages_mode()}
