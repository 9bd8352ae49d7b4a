"""The host allocator's huge pages: why a CPU training process restarts itself once at start.

XLA:CPU allocates every step's temporary buffers afresh (about 2 GB in one block at batch 64),
and glibc's malloc serves a block that large with a fresh `mmap` and returns it with `munmap`
when the step ends: in a thread's own arena it maps such a block even with `M_MMAP_MAX=0`, so no
`mallopt` or `MALLOC_*_` setting keeps it. The kernel then faults the block in again, 4 KB at a
time, at every step: about a million minor faults a step at batch 64, a third of the step's CPU
time on the AVX2 host of docs/performance.md. glibc (2.35 and later) has a tunable,
`glibc.malloc.hugetlb=1`, with which malloc asks for transparent huge pages for what it maps
(`madvise(MADV_HUGEPAGE)`), so the same block faults in 2 MB at a time: the faults drop about a
hundredfold where the kernel's THP mode is `madvise` (in mode `always` every mapping already
gets them; in `never` none can).

Tunables are read once, when glibc starts, so the setting cannot be made from Python after the
fact: `restart_with_huge_pages` restarts the process (`os.execve`: the same PID, arguments and
open descriptors) with the tunable added to `GLIBC_TUNABLES`, before anything else has run.
It does so only where it helps and nobody chose otherwise: Linux with glibc 2.35 or later, THP
mode `madvise`, JAX on the CPU (no accelerator plugin installed, or `JAX_PLATFORMS=cpu`), and
`GLIBC_TUNABLES` not already naming `glibc.malloc.hugetlb` (a user's own setting, `=0` for
glibc's default, wins). Every run's first record carries `state()` (common/provenance.py).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pkgutil
import platform
import sys
from pathlib import Path
from typing import Mapping

TUNABLES_VARIABLE = "GLIBC_TUNABLES"
HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
FIRST_GLIBC_WITH_THE_TUNABLE = (2, 35)
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


def tunables_with_huge_pages(environ: Mapping[str, str]) -> str | None:
    """The `GLIBC_TUNABLES` value this process should restart with, or None where it should
    not restart: the platform gains nothing, or the tunable is already set (by us or the user)."""
    tunables = environ.get(TUNABLES_VARIABLE, "")
    named = {item.partition("=")[0] for item in tunables.split(":") if item}
    if HUGE_PAGES_TUNABLE in named:
        return None
    version = glibc_version()
    if version is None or version < FIRST_GLIBC_WITH_THE_TUNABLE:
        return None
    if transparent_huge_pages_mode() != "madvise" or not jax_runs_on_cpu(environ):
        return None
    return ":".join(filter(None, (tunables, f"{HUGE_PAGES_TUNABLE}=1")))


def restart_with_huge_pages() -> None:
    """Restart this process with glibc's malloc asking for huge pages, where that helps and is
    not set (see the module's docstring); returns only where no restart is due. Call it first
    thing in a program's entry point: the process's work so far is lost at the restart."""
    tunables = tunables_with_huge_pages(os.environ)
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


def state() -> dict[str, str | None]:
    """What this process's host allocator runs with, for a run's provenance."""
    return {"glibc_tunables": os.environ.get(TUNABLES_VARIABLE),
            "transparent_hugepage": transparent_huge_pages_mode()}
