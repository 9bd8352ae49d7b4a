"""The restart with the host allocator of a CPU training process (alexnet_jax/common/
host_memory.py): when it is due, that it keeps the process and its arguments, and that a large
block a thread frees is then reused by the next one without faulting in again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alexnet_jax.common import host_memory

REPO = Path(__file__).resolve().parents[1]
GLIBC = host_memory.glibc_version()
SUPPORTED = GLIBC is not None and GLIBC >= host_memory.FIRST_GLIBC_WITH_TUNABLES
HUGE_PAGES = (SUPPORTED and GLIBC >= host_memory.FIRST_GLIBC_WITH_HUGE_PAGES
              and host_memory.transparent_huge_pages_mode() == "madvise")
KEEP = "glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=1099511627776"


@pytest.fixture
def madvise_host(monkeypatch):
    """A glibc 2.36 host whose kernel gives huge pages on request, whatever this one is."""
    monkeypatch.setattr(host_memory, "glibc_version", lambda: (2, 36))
    monkeypatch.setattr(host_memory, "transparent_huge_pages_mode", lambda: "madvise")


def test_the_restart_is_due_on_a_cpu_host_and_adds_to_the_users_tunables(madvise_host):
    cpu = {"JAX_PLATFORMS": "cpu"}
    assert host_memory.tunables_for_training(cpu) == KEEP + ":glibc.malloc.hugetlb=1"
    assert host_memory.tunables_for_training(
        {**cpu, "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}) == (
        "glibc.malloc.tcache_count=0:" + KEEP + ":glibc.malloc.hugetlb=1")


@pytest.mark.parametrize("mode, glibc", [("always", (2, 36)), ("never", (2, 36)),
                                         (None, (2, 36)), ("madvise", (2, 34)),
                                         ("madvise", (2, 26))])
def test_huge_pages_only_where_the_kernel_gives_them_on_request(monkeypatch, mode, glibc):
    monkeypatch.setattr(host_memory, "glibc_version", lambda: glibc)
    monkeypatch.setattr(host_memory, "transparent_huge_pages_mode", lambda: mode)
    assert host_memory.tunables_for_training({"JAX_PLATFORMS": "cpu"}) == KEEP


@pytest.mark.parametrize("environ", [
    {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},   # the user's choice
    {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.arena_max=4"},  # the user's choice
    {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": KEEP},                        # restarted already
    {"JAX_PLATFORMS": "cuda"},
    {"JAX_PLATFORMS": "cpu,cuda"},
])
def test_no_restart_where_chosen_already_or_jax_computes_elsewhere(madvise_host, environ):
    assert host_memory.tunables_for_training(environ) is None


@pytest.mark.parametrize("glibc", [(2, 25), None])
def test_no_restart_without_glibcs_tunables(monkeypatch, glibc):
    monkeypatch.setattr(host_memory, "glibc_version", lambda: glibc)
    assert host_memory.tunables_for_training({"JAX_PLATFORMS": "cpu"}) is None


def test_an_accelerator_plugin_installed_means_jax_computes_there(monkeypatch):
    class Plugin:
        metadata = {"Name": "jax-cuda12-plugin"}
    # an older plugin: known by its distribution's name only
    monkeypatch.setattr(host_memory.importlib.metadata, "entry_points", lambda group: [])
    monkeypatch.setattr(host_memory.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(host_memory.importlib.metadata, "distributions", lambda: [Plugin()])
    assert not host_memory.jax_runs_on_cpu({})
    assert host_memory.jax_runs_on_cpu({"JAX_PLATFORMS": "cpu"})
    monkeypatch.setattr(host_memory.importlib.metadata, "distributions", lambda: [])
    assert host_memory.jax_runs_on_cpu({})
    # a plugin known only by JAX's own discovery: the entry-point group
    monkeypatch.setattr(host_memory.importlib.metadata, "entry_points",
                        lambda group: [object()] if group == "jax_plugins" else [])
    assert not host_memory.jax_runs_on_cpu({})


def test_the_restart_survives_closed_streams_an_empty_executable_and_a_failed_exec(monkeypatch):
    calls = []
    monkeypatch.setattr(host_memory, "tunables_for_training", lambda environ: "t=1")
    monkeypatch.setattr(host_memory.os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(host_memory.sys, "stdout", None)      # python ... >&-
    monkeypatch.setattr(host_memory.sys, "executable", "")     # a bare name without PATH
    host_memory.restart_with_host_allocator()
    [(executable, argv, environ)] = calls
    assert executable == "/proc/self/exe" and argv == sys.orig_argv
    assert environ["GLIBC_TUNABLES"] == "t=1"

    def refused(*args):
        raise PermissionError("exec refused")
    monkeypatch.setattr(host_memory.os, "execve", refused)
    host_memory.restart_with_host_allocator()                     # goes on without the restart


def test_the_kernels_mode_is_the_bracketed_word(tmp_path):
    mode_file = tmp_path / "enabled"
    mode_file.write_text("always [madvise] never\n")
    assert host_memory.transparent_huge_pages_mode(mode_file) == "madvise"
    assert host_memory.transparent_huge_pages_mode(tmp_path / "missing") is None


# A child that reports its PID and arguments, restarts where due, and then fills a 256 MB block
# from glibc's malloc, frees it, and does it again, each time on a thread of its own as XLA's
# steps do (numpy would madvise on its own): the minor page faults of each fill.
CHILD = textwrap.dedent("""
    import ctypes, os, resource, sys, threading
    from alexnet_jax.common import host_memory
    print("started", os.getpid(), sys.argv[1:], sys.flags.utf8_mode, flush=True)
    host_memory.restart_with_host_allocator()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size, faults = 256 << 20, []

    def fill_and_free():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(ctypes.c_size_t(size))
        ctypes.memset(block, 1, size)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        libc.free(block)

    for _ in range(2):
        thread = threading.Thread(target=fill_and_free)
        thread.start()
        thread.join()
    print("filled", os.environ.get("GLIBC_TUNABLES"), *faults, flush=True)
""")
SMALL_PAGES = (256 << 20) // 4096


def run_child(tmp_path: Path, **environ: str) -> list[list[str]]:
    (tmp_path / "restarting_child.py").write_text(CHILD)
    base = {key: value for key, value in os.environ.items() if key != "GLIBC_TUNABLES"}
    # as a module with interpreter options, as `python -m alexnet_jax.main` starts: the
    # restart must keep both
    result = subprocess.run([sys.executable, "-X", "utf8", "-m", "restarting_child",
                             "--an-argument"], cwd=REPO,
                            env={**base, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
                                 "JAX_PLATFORMS": "cpu", **environ},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line.split(" ", 1) for line in result.stdout.splitlines()]


@pytest.mark.skipif(not SUPPORTED, reason="needs glibc >= 2.26")
def test_the_restarted_process_keeps_its_pid_and_arguments_and_reuses_freed_blocks(tmp_path):
    lines = run_child(tmp_path)
    started = [rest for word, rest in lines if word == "started"]
    assert len(started) == 2 and started[0] == started[1]       # once, then once restarted
    assert started[0].endswith("['--an-argument'] 1")               # the option kept too
    [(tunables, first, second)] = [rest.split() for word, rest in lines if word == "filled"]
    assert tunables == host_memory.tunables_for_training({"JAX_PLATFORMS": "cpu"})
    # the freed block reused: (almost) no fault, where huge pages alone fault 128 times by 2 MB
    assert int(second) < 32, (first, second)
    if HUGE_PAGES:
        assert int(first) < SMALL_PAGES // 4, first               # grown by 2 MB faults

    lines = run_child(tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")   # the user's choice
    assert [word for word, _ in lines] == ["started", "filled"]
    faults = [int(count) for count in lines[1][1].split()[1:]]
    assert min(faults) > SMALL_PAGES // 2, faults    # glibc's default: mapped afresh, by 4 KB
