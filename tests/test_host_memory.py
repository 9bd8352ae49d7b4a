"""The restart with glibc's huge pages (alexnet_jax/common/host_memory.py): when it is due, that
it keeps the process and its arguments, and that malloc's large blocks then fault in by 2 MB."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alexnet_jax.common import host_memory

REPO = Path(__file__).resolve().parents[1]
SUPPORTED = (host_memory.glibc_version() is not None
             and host_memory.glibc_version() >= host_memory.FIRST_GLIBC_WITH_THE_TUNABLE
             and host_memory.transparent_huge_pages_mode() == "madvise")


@pytest.fixture
def madvise_host(monkeypatch):
    """A glibc 2.36 host whose kernel gives huge pages on request, whatever this one is."""
    monkeypatch.setattr(host_memory, "glibc_version", lambda: (2, 36))
    monkeypatch.setattr(host_memory, "transparent_huge_pages_mode", lambda: "madvise")


def test_the_restart_is_due_on_a_cpu_host_that_gains_and_adds_to_the_users_tunables(madvise_host):
    cpu = {"JAX_PLATFORMS": "cpu"}
    assert host_memory.tunables_with_huge_pages(cpu) == "glibc.malloc.hugetlb=1"
    assert host_memory.tunables_with_huge_pages(
        {**cpu, "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}) == (
        "glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1")


@pytest.mark.parametrize("environ", [
    {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"},   # the user's choice
    {"JAX_PLATFORMS": "cpu", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"},   # restarted already
    {"JAX_PLATFORMS": "cuda"},
    {"JAX_PLATFORMS": "cpu,cuda"},
])
def test_no_restart_where_chosen_already_or_jax_computes_elsewhere(madvise_host, environ):
    assert host_memory.tunables_with_huge_pages(environ) is None


@pytest.mark.parametrize("mode, glibc", [("always", (2, 36)), ("never", (2, 36)),
                                         (None, (2, 36)), ("madvise", (2, 34)),
                                         ("madvise", None)])
def test_no_restart_where_the_host_gains_nothing_from_it(monkeypatch, mode, glibc):
    monkeypatch.setattr(host_memory, "glibc_version", lambda: glibc)
    monkeypatch.setattr(host_memory, "transparent_huge_pages_mode", lambda: mode)
    assert host_memory.tunables_with_huge_pages({"JAX_PLATFORMS": "cpu"}) is None


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
    monkeypatch.setattr(host_memory, "tunables_with_huge_pages", lambda environ: "t=1")
    monkeypatch.setattr(host_memory.os, "execve", lambda *args: calls.append(args))
    monkeypatch.setattr(host_memory.sys, "stdout", None)      # python ... >&-
    monkeypatch.setattr(host_memory.sys, "executable", "")     # a bare name without PATH
    host_memory.restart_with_huge_pages()
    [(executable, argv, environ)] = calls
    assert executable == "/proc/self/exe" and argv == sys.orig_argv
    assert environ["GLIBC_TUNABLES"] == "t=1"

    def refused(*args):
        raise PermissionError("exec refused")
    monkeypatch.setattr(host_memory.os, "execve", refused)
    host_memory.restart_with_huge_pages()                     # goes on without the restart


def test_the_kernels_mode_is_the_bracketed_word(tmp_path):
    mode_file = tmp_path / "enabled"
    mode_file.write_text("always [madvise] never\n")
    assert host_memory.transparent_huge_pages_mode(mode_file) == "madvise"
    assert host_memory.transparent_huge_pages_mode(tmp_path / "missing") is None


# A child that reports its PID and arguments, restarts where due, and then counts the minor
# page faults of filling a 256 MB block from glibc's malloc (numpy would madvise on its own).
CHILD = textwrap.dedent("""
    import ctypes, os, resource, sys
    from alexnet_jax.common import host_memory
    print("started", os.getpid(), sys.argv[1:], sys.flags.utf8_mode, flush=True)
    host_memory.restart_with_huge_pages()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    size = 256 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(ctypes.c_size_t(size))
    ctypes.memset(block, 1, size)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print("filled", os.environ.get("GLIBC_TUNABLES"), faults, flush=True)
""")


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


@pytest.mark.skipif(not SUPPORTED, reason="needs glibc >= 2.35 and the kernel's THP mode madvise")
def test_the_restarted_process_keeps_its_pid_and_arguments_and_faults_by_huge_pages(tmp_path):
    lines = run_child(tmp_path)
    started = [rest for word, rest in lines if word == "started"]
    assert len(started) == 2 and started[0] == started[1]       # once, then once restarted
    assert started[0].endswith("['--an-argument'] 1")               # the option kept too
    [filled] = [rest.split() for word, rest in lines if word == "filled"]
    assert filled[0] == "glibc.malloc.hugetlb=1"
    small_pages = (256 << 20) // 4096
    assert int(filled[1]) < small_pages // 4, filled          # 2 MB faults, not 65,536 of 4 KB

    lines = run_child(tmp_path, GLIBC_TUNABLES="glibc.malloc.hugetlb=0")   # the user's choice
    assert [word for word, _ in lines] == ["started", "filled"]
    faults = int(lines[1][1].split()[1])
    assert faults > small_pages // 2, faults                   # glibc's default: 4 KB faults
