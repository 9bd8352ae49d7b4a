"""Studies: a set of ordinary runs (arms x seeds) made by one command, resumable, reported.

A study file (configs/studies/<name>.py) defines `get_study()` returning a dict:

    name, description   what it is
    base_config         the config file every arm starts from (e.g. "configs/cifar10.py")
    overrides           {config key: value} applied to every arm (the study's budget, ...)
    seeds               the seeds of every arm that does not name its own
    baseline            the arm the others are compared with
    target_train_error  optional: report the epochs each run needed to reach this training error
    arms                a list, run in this order, of dicts:
        name            the arm's name (its runs live in DIR/<name>/seed<k>/)
        overrides       {config key: value} on top of the study's
        seeds           optional: this arm's seeds
        paper           optional: {"top1": .., "top5": .., "note": ..}, the paper's difference to
                        the baseline in percentage points (positive = worse than the baseline)
        sweep           optional: True for an arm of a sweep (reported apart, not compared)
        choose          optional: {"key": config key, "among": [arm names]}: the value of `key`
                        is taken from the listed (sweep) arm whose runs ended with the lowest
                        mean training error of their last epoch; those arms must come first.
                        A sweep run whose loss became non-finite counts as failed (an infinite
                        error) and the study goes on; in any other arm it stops the study.

Each run is `python -m alexnet_jax.main --config=<base_config> --workdir=DIR/<arm>/seed<k>
--config.seed=<k> --config.<key>=<value> ...` (study overrides, arm overrides, then the command
line's), so a run's workdir is a normal one: resumable and evaluable with --mode=eval. Its output
goes to DIR/logs/<arm>_seed<k>.log. A run that has written run_complete.json is skipped.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from alexnet_jax import supervisor
from alexnet_jax.errors import UserError
from alexnet_jax.run_files import read_completion, read_divergence

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of a study."""

    name: str
    overrides: dict[str, Any]
    seeds: tuple[int, ...]
    paper: dict[str, Any] | None = None
    sweep: bool = False
    choose: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Study:
    """A study as its file defines it."""

    name: str
    description: str
    base_config: str
    overrides: dict[str, Any]
    baseline: str
    arms: tuple[Arm, ...]
    target_train_error: float | None = None

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(name)


def load_study(path: str | os.PathLike) -> Study:
    """Read and check a study file; UserError for anything missing or inconsistent."""
    path = Path(path)
    if not path.is_file():
        existing = sorted(p.name for p in (REPO / "configs" / "studies").glob("*.py")
                          if p.name != "__init__.py")
        raise UserError(f"no study file {path}; the studies are configs/studies/"
                        f"{{{', '.join(existing)}}}.")
    spec = importlib.util.spec_from_file_location(f"study_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_study"):
        raise UserError(f"{path} has no get_study() function.")
    raw = module.get_study()
    try:
        default_seeds = tuple(raw.get("seeds", (0,)))
        arms = tuple(Arm(name=a["name"], overrides=dict(a.get("overrides", {})),
                         seeds=tuple(a.get("seeds", default_seeds)), paper=a.get("paper"),
                         sweep=bool(a.get("sweep", False)), choose=a.get("choose"))
                     for a in raw["arms"])
        study = Study(name=raw.get("name", path.stem), description=raw.get("description", ""),
                      base_config=raw["base_config"], overrides=dict(raw.get("overrides", {})),
                      baseline=raw["baseline"], arms=arms,
                      target_train_error=raw.get("target_train_error"))
    except KeyError as error:
        raise UserError(f"{path}: the study (or one of its arms) lacks the key {error}.") from error
    names = [arm.name for arm in study.arms]
    if len(set(names)) != len(names) or study.baseline not in names:
        raise UserError(f"{path}: arm names must be unique and include the baseline "
                        f"{study.baseline!r}; got {names}.")
    for index, arm in enumerate(study.arms):
        if arm.choose and not set(arm.choose["among"]) <= set(names[:index]):
            raise UserError(f"{path}: arm {arm.name!r} chooses among {arm.choose['among']}, "
                            "which must all be arms listed before it.")
    return study


def format_override(key: str, value: Any) -> str:
    """`--config.key=value` as ml_collections parses it back to the same value."""
    if isinstance(value, (tuple, list)):
        inner = ", ".join(repr(v) if isinstance(v, str) else str(v) for v in value)
        text = f"({inner},)" if len(value) == 1 else f"({inner})"
    else:
        text = str(value)
    return f"--config.{key}={text}"


def run_dir(directory: Path, arm: str, seed: int) -> Path:
    return Path(directory) / arm / f"seed{seed}"


def log_path(directory: Path, arm: str, seed: int) -> Path:
    return Path(directory) / "logs" / f"{arm}_seed{seed}.log"


def chosen_value(study: Study, arm: Arm, directory: Path,
                 final_train_error: Callable[[Path], float | None]) -> Any:
    """The value of arm.choose["key"] from the best of the arms it chooses among."""
    key, candidates = arm.choose["key"], arm.choose["among"]
    scores = {}
    for name in candidates:
        errors = [final_train_error(run_dir(directory, name, seed))
                  for seed in study.arm(name).seeds]
        if any(error is None for error in errors):
            raise UserError(f"arm {arm.name!r} needs the finished runs of {name!r} to choose "
                            f"{key}; run the study again once they have finished.")
        scores[name] = sum(errors) / len(errors)
    best = min(candidates, key=lambda name: scores[name])
    if scores[best] == float("inf"):
        raise UserError(f"every run that arm {arm.name!r} chooses {key} among diverged "
                        f"({', '.join(candidates)}); the sweep needs a smaller value.")
    return study.arm(best).overrides.get(key, study.overrides.get(key))


def arm_overrides(study: Study, arm: Arm, directory: Path,
                  final_train_error: Callable[[Path], float | None]) -> dict[str, Any]:
    """The study's overrides, then the arm's, with a chosen value resolved."""
    overrides = {**study.overrides, **arm.overrides}
    if arm.choose:
        overrides[arm.choose["key"]] = chosen_value(study, arm, directory, final_train_error)
    return overrides


def run_command(study: Study, arm: Arm, seed: int, directory: Path,
                overrides: dict[str, Any], extra_args: list[str]) -> list[str]:
    """The ordinary training command of one run."""
    return [sys.executable, "-m", "alexnet_jax.main", f"--config={study.base_config}",
            f"--workdir={run_dir(directory, arm.name, seed)}", f"--config.seed={seed}",
            *(format_override(k, v) for k, v in overrides.items()), *extra_args]


class _ForwardSignals:
    """While a run's process lives, SIGTERM/SIGINT/SIGHUP to the study go to it (it saves a
    checkpoint and exits), and the study stops after it."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.received: str | None = None
        self._previous = {}
        self._forward = supervisor.forward_stop_signals(lambda: self.child)

    def _handle(self, signum, frame):
        self.received = signal.Signals(signum).name
        self._forward(signum, frame)

    def __enter__(self):
        for signum in supervisor.STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run_study(study: Study, directory: Path, extra_args: list[str],
              final_train_error: Callable[[Path], float | None],
              after_each_run: Callable[[], None] = lambda: None) -> int:
    """Run every unfinished run in order; returns 0 when all are complete, else the failing
    run's exit code (or 1 after an interruption)."""
    directory = Path(directory).absolute()
    (directory / "logs").mkdir(parents=True, exist_ok=True)
    record = {"study": dataclasses.asdict(study), "extra_args": extra_args}
    (directory / "study.json").write_text(json.dumps(record, indent=1, default=str))
    plan = [(arm, seed) for arm in study.arms for seed in arm.seeds]
    with _ForwardSignals() as signals:
        for number, (arm, seed) in enumerate(plan, 1):
            workdir = run_dir(directory, arm.name, seed)
            label = f"[{number}/{len(plan)}] {arm.name} seed {seed}"
            if read_completion(workdir) is not None:
                print(f"{label}: complete", flush=True)
                continue
            if arm.sweep and (diverged := read_divergence(workdir)):
                print(f"{label}: diverged at step {diverged['step']} (a failed sweep run)",
                      flush=True)
                continue
            overrides = arm_overrides(study, arm, directory, final_train_error)
            command = run_command(study, arm, seed, directory, overrides, extra_args)
            log = log_path(directory, arm.name, seed)
            print(f"{label}: training ({log})", flush=True)
            start = time.time()
            with log.open("a") as out:
                out.write(f"\n$ {' '.join(command)}\n")
                out.flush()
                # its own process group: a terminal's Ctrl-C reaches it once, through the
                # study (a second SIGINT would stop it without a checkpoint)
                signals.child = subprocess.Popen(command, cwd=REPO, stdout=out,
                                                 stderr=subprocess.STDOUT, process_group=0)
                code = signals.child.wait()
                signals.child = None
            after_each_run()
            if signals.received:
                print(f"{label}: stopped by {signals.received} after {time.time() - start:.0f} s "
                      "(checkpoint saved); run the same command again to resume.", flush=True)
                return 1
            if code != 0 and arm.sweep and (diverged := read_divergence(workdir)):
                print(f"{label}: diverged at step {diverged['step']}: scored as a failed sweep "
                      "run, the study goes on", flush=True)
                continue
            if code != 0:
                print(f"{label}: failed with exit code {code}; the end of {log}:", flush=True)
                print("".join(log.read_text().splitlines(keepends=True)[-15:]), flush=True)
                return code
            print(f"{label}: done in {time.time() - start:.0f} s", flush=True)
    return 0
