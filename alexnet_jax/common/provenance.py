"""What made a result: the code's commit, the package versions, the platform.

Every run's first `metrics.jsonl` record carries `provenance()` (training/run.py), so a record
committed to docs/results names the code that produced it, and a study report can say when its
runs span commits that changed what is measured (`changed_paths`). No JAX import here: the
versions are read from the installed distributions' metadata, and the report reads records
without loading any framework.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from alexnet_jax.common import host_memory

REPO = Path(__file__).resolve().parents[2]
# the distributions whose versions a result depends on (the design card's packages)
PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "tensorflow-datasets",
            "numpy")
# the parts of the package whose changes can move a measured number
MEASURED_CODE = ("alexnet_jax/model", "alexnet_jax/data", "alexnet_jax/training")


def _git(*arguments: str, repo: Path = REPO) -> str | None:
    """A git command's output in `repo`, or None when git or the repository is not there (an
    installed copy of the package, a machine without git)."""
    try:
        done = subprocess.run(["git", "-C", str(repo), *arguments], capture_output=True,
                              text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def code_version(repo: Path = REPO) -> dict[str, Any]:
    """{"commit": the checkout's HEAD (None outside a git checkout), "dirty": whether tracked
    or new unignored files differ from it (None when unknown)}."""
    commit = _git("rev-parse", "HEAD", repo=repo)
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", repo=repo)
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def package_versions() -> dict[str, str | None]:
    """The installed version of each of PACKAGES (None: not installed)."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


# the vector instruction sets that decide XLA:CPU's and oneDNN's kernels, widest first
INSTRUCTION_SETS = ("avx512f", "avx2", "avx", "sse4_2", "neon", "asimd")


def host_processor() -> dict[str, str]:
    """The host's processor model and its widest vector instruction set (Linux's
    /proc/cpuinfo; the platform's processor name elsewhere): CPU timings differ by host."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model in ("", platform.machine()):
                model = value.strip()
            elif key.strip() in ("flags", "Features"):
                flags |= set(value.split())
    except OSError:
        pass
    widest = next((name for name in INSTRUCTION_SETS if name in flags), "unknown")
    return {"model": model, "instruction_set": widest}


def provenance(repo: Path = REPO) -> dict[str, Any]:
    """The code version, package versions and platform of this process, for a run's first
    record (the devices and processes are recorded beside it by the run)."""
    return {"code": code_version(repo), "versions": package_versions(),
            "platform": {"system": platform.platform(), "machine": platform.machine(),
                         "python": sys.version.split()[0], "processor": host_processor(),
                         "host_memory": host_memory.state()}}


def changed_paths(first: str, second: str, paths=MEASURED_CODE,
                  repo: Path = REPO) -> list[str] | None:
    """The files under `paths` that differ between two commits; None when either commit is not
    in the repository (then nobody can tell)."""
    output = _git("diff", "--name-only", first, second, "--", *paths, repo=repo)
    return None if output is None else [line for line in output.splitlines() if line]


def commits_summary(codes_by_run: dict[str, list[dict[str, Any]] | None],
                    repo: Path = REPO) -> dict[str, Any]:
    """Which commits a set of runs came from ({run label: the `code` of each of its starts,
    None for a record made before runs named their code}): {"commits": {commit: [runs]},
    "dirty": [runs started with uncommitted changes], "unrecorded": [runs], "changed":
    {commit: [measured files that differ from the first commit]} or None when a commit is not
    in this repository}."""
    commits: dict[str, list[str]] = {}
    dirty, unrecorded = [], []
    for label, codes in codes_by_run.items():
        if not codes or any(code is None or code.get("commit") is None for code in codes):
            unrecorded.append(label)
        for code in codes or ():
            if code and code.get("commit"):
                commits.setdefault(code["commit"], [])
                if label not in commits[code["commit"]]:
                    commits[code["commit"]].append(label)
                if code.get("dirty") and label not in dirty:
                    dirty.append(label)
    changed: dict[str, list[str]] | None = {}
    first = next(iter(commits), None)
    for commit in list(commits)[1:]:
        files = changed_paths(first, commit, repo=repo)
        if files is None:
            changed = None
            break
        if files:
            changed[commit] = files
    return {"commits": commits, "dirty": dirty, "unrecorded": unrecorded, "changed": changed}


def commits_text(summary: dict[str, Any]) -> str:
    """A report's paragraph on the code its runs came from (commits_summary's result)."""
    commits, said = summary["commits"], []
    if commits:
        said.append("Code: " + "; ".join(f"`{commit[:10]}` ({len(runs)} run"
                                         f"{'s' if len(runs) > 1 else ''})"
                                         for commit, runs in commits.items()) + ".")
    if summary["unrecorded"]:
        said.append(f"{len(summary['unrecorded'])} run(s) made before records named their code "
                    f"({', '.join(summary['unrecorded'])}): their commit is unknown.")
    if summary["dirty"]:
        said.append("Started with uncommitted changes: " + ", ".join(summary["dirty"]) + ".")
    if len(commits) > 1:
        first = next(iter(commits))[:10]
        if summary["changed"] is None:
            said.append("Some of these commits are not in this repository, so whether they "
                        "changed the measured code cannot be told here.")
        elif summary["changed"]:
            said.append(f"**The runs span commits that changed the measured code** "
                        f"({', '.join(MEASURED_CODE)}), against `{first}`: " + "; ".join(
                            f"`{commit[:10]}`: {', '.join(files)}"
                            for commit, files in summary["changed"].items()) + ".")
        else:
            said.append(f"None of these commits changed {', '.join(MEASURED_CODE)} against "
                        f"`{first}`.")
    return " ".join(said)
