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

Order: the runs of the arms that others choose among (sweeps) first, then the first seed of every
other arm, then the second seed of every arm that has one, and so on, so that a study cut short
is still a comparison. With a record directory (alexnet_jax/studies/records.py) every finished run
is copied there, and a recorded run counts as finished even when its workdir is gone.
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
from typing import Any, Callable, Sequence

from alexnet_jax.common.errors import UserError
from alexnet_jax.common.run_files import (
    read_completion,
    read_divergence,
    read_train_evaluation,
)
from alexnet_jax.studies import records as study_records
from alexnet_jax.training.processes import supervisor

REPO = Path(__file__).resolve().parents[2]


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


@dataclasses.dataclass(frozen=True)
class StudyDirs:
    """Where a study's runs train (`runs`: workdirs with checkpoints, for this machine) and where
    their records are kept (`record`: small files, meant to be committed). Either may be None:
    no records kept, or (for a report) no workdirs at hand."""

    runs: Path | None
    record: Path | None = None

    def workdir(self, arm: str, seed: int) -> Path:
        if self.runs is None:
            raise UserError("this needs the study's run directory (--dir=DIR).")
        return run_dir(self.runs, arm, seed)

    def recorded(self, arm: Arm, seed: int) -> Path | None:
        """The run's record, if it has a finished one."""
        if self.record is None:
            return None
        path = study_records.record_dir(self.record, arm.name, seed)
        study_records.recover_record(path)
        return path if is_finished(path, arm) else None

    def result(self, arm: Arm, seed: int) -> Path:
        """Where the run's results are read from: its record once it has one; else its workdir
        (none when only records are at hand: an empty path reads as a run not yet made)."""
        recorded = self.recorded(arm, seed)
        if recorded is not None or self.runs is None:
            return recorded or study_records.record_dir(self.record, arm.name, seed)
        return run_dir(self.runs, arm.name, seed)

    @property
    def report(self) -> Path:
        """Where results.json, results.md and results.png go."""
        return Path(self.record if self.record is not None else self.runs)


def as_dirs(directory: "Path | StudyDirs") -> StudyDirs:
    return directory if isinstance(directory, StudyDirs) else StudyDirs(Path(directory))


def is_finished(workdir: Path, arm: Arm) -> bool:
    """A run that will not train again: complete, or (in a sweep) ended by a non-finite loss."""
    return read_completion(workdir) is not None or (
        arm.sweep and read_divergence(workdir) is not None)


def run_order(study: Study, rounds: int | None = None,
              arms: Sequence[str] | None = None) -> list[tuple[Arm, int]]:
    """(arm, seed) in the order they run: every run of the arms chosen among first (their
    results decide the others' values), then round by round, seed index by seed index; with
    `rounds`, only the first `rounds` seeds of each arm; with `arms`, only those arms (and the
    runs their values are chosen from). UserError for a name the study does not have."""
    names = [arm.name for arm in study.arms]
    unknown = [name for name in arms or () if name not in names]
    if arms is not None and not arms:
        raise UserError(f"no arm named to run; study {study.name!r} has {', '.join(names)}.")
    if unknown:
        raise UserError(f"study {study.name!r} has no arm {', '.join(map(repr, unknown))}; "
                        f"its arms are {', '.join(names)}.")
    wanted = [arm for arm in study.arms if arms is None or arm.name in arms]
    among = {name for arm in study.arms if arm.choose for name in arm.choose["among"]}
    needed = among if arms is None else {name for arm in wanted if arm.choose
                                         for name in arm.choose["among"]} | (set(arms) & among)
    first = [(arm, seed) for arm in study.arms if arm.name in needed for seed in arm.seeds]
    rest = [arm for arm in wanted if arm.name not in among]
    most = max((len(arm.seeds) for arm in rest), default=0)
    rounds = most if rounds is None else min(rounds, most)
    return first + [(arm, arm.seeds[index]) for index in range(rounds) for arm in rest
                    if index < len(arm.seeds)]


def log_path(directory: Path, arm: str, seed: int) -> Path:
    return Path(directory) / "logs" / f"{arm}_seed{seed}.log"


def chosen_value(study: Study, arm: Arm, directory: Path | StudyDirs,
                 final_train_error: Callable[[Path], float | None]) -> Any:
    """The value of arm.choose["key"] from the best of the arms it chooses among."""
    key, candidates = arm.choose["key"], arm.choose["among"]
    dirs = as_dirs(directory)
    scores = {}
    for name in candidates:
        errors = [final_train_error(dirs.result(study.arm(name), seed))
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


def arm_overrides(study: Study, arm: Arm, directory: Path | StudyDirs,
                  final_train_error: Callable[[Path], float | None]) -> dict[str, Any]:
    """The study's overrides, then the arm's, with a chosen value resolved."""
    overrides = {**study.overrides, **arm.overrides}
    if arm.choose:
        overrides[arm.choose["key"]] = chosen_value(study, arm, directory, final_train_error)
    return overrides


def config_args(study: Study, seed: int, overrides: dict[str, Any],
                extra_args: list[str]) -> list[str]:
    """The `--config=...` and `--config.<key>=...` arguments of one run."""
    return [f"--config={study.base_config}", f"--config.seed={seed}",
            *(format_override(k, v) for k, v in overrides.items()), *extra_args]


def run_command(study: Study, arm: Arm, seed: int, directory: Path,
                overrides: dict[str, Any], extra_args: list[str]) -> list[str]:
    """The ordinary training command of one run."""
    arguments = config_args(study, seed, overrides, extra_args)
    return [sys.executable, "-m", "alexnet_jax.main", arguments[0],
            f"--workdir={run_dir(directory, arm.name, seed)}", *arguments[1:]]


def _evaluate_training_images(study: Study, arm: Arm, seed: int, dirs: StudyDirs,
                              overrides: dict[str, Any], extra_args: list[str], label: str,
                              signals: "_ForwardSignals") -> None:
    """Evaluate a finished run's training images (`--mode=eval --split=train`: centre crops,
    no augmentation or dropout) into its eval_results.jsonl, while its checkpoint is here: the
    fit that a val - train gap needs (the training error logged while training has dropout
    on). A failure is said and the run is recorded without it."""
    workdir = dirs.workdir(arm.name, seed)
    if arm.sweep or read_train_evaluation(workdir) is not None:
        return  # a sweep run only chooses a value: its fit is not reported
    command = [*run_command(study, arm, seed, dirs.runs, overrides, extra_args),
               "--mode=eval", "--split=train"]
    log = log_path(dirs.runs, arm.name, seed)
    print(f"{label}: evaluating its training images ({log})", flush=True)
    code = _run_logged(command, log, signals)
    if code != 0 and not signals.received:
        print(f"{label}: evaluating its training images failed (exit code {code}; see {log}); "
              "it is recorded without them", flush=True)


def _run_logged(command: list[str], log: Path, signals: "_ForwardSignals") -> int:
    """Run one command of the study to its end, its output appended to `log`, stop signals
    forwarded to it; its exit code."""
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        # its own process group: a terminal's Ctrl-C reaches it once, through the study (a
        # second SIGINT would stop it without a checkpoint)
        signals.child = subprocess.Popen(command, cwd=REPO, stdout=out,
                                         stderr=subprocess.STDOUT, process_group=0)
        code = signals.child.wait()
        signals.child = None
    return code


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


def run_study(study: Study, directory: Path | StudyDirs, extra_args: list[str],
              final_train_error: Callable[[Path], float | None],
              after_each_run: Callable[[], None] = lambda: None,
              rounds: int | None = None, arms: Sequence[str] | None = None) -> int:
    """Run every unfinished run in `run_order` (the first `rounds` seeds of each arm, and only
    `arms`, when given); returns 0 when all are complete, else the failing run's exit code (or
    1 after an interruption). Finished runs are checked to have been made with the config the
    study runs now, and copied to the record directory."""
    plan = run_order(study, rounds, arms)  # a UserError for an unknown arm before any file
    dirs = as_dirs(directory)
    runs = dirs.workdir("-", 0).parents[1].absolute()  # UserError without a run directory
    dirs = StudyDirs(runs, Path(dirs.record).absolute() if dirs.record else None)
    (runs / "logs").mkdir(parents=True, exist_ok=True)
    record = {"study": dataclasses.asdict(study), "extra_args": extra_args}
    (runs / "study.json").write_text(json.dumps(record, indent=1, default=str))
    with _ForwardSignals() as signals:
        for number, (arm, seed) in enumerate(plan, 1):
            label = f"[{number}/{len(plan)}] {arm.name} seed {seed}"
            if _already_finished(study, arm, seed, dirs, extra_args, final_train_error, label,
                                 signals):
                if signals.received:  # during its training images' evaluation: stop here,
                    # not in the next run (which would start after the signal had passed)
                    print(f"{label}: stopped by {signals.received}; run the same command "
                          "again to go on.", flush=True)
                    return 1
                continue
            code = _train_one(study, arm, seed, dirs, extra_args, final_train_error, label,
                              signals, after_each_run)
            if code is not None:
                return code
    return 0


def _already_finished(study: Study, arm: Arm, seed: int, dirs: StudyDirs,
                      extra_args: list[str], final_train_error, label: str,
                      signals: _ForwardSignals) -> bool:
    """True (and said) for a run recorded or finished in its workdir, once its config is
    checked to be the one the study would run now; a finished run gets its record, with the
    evaluation of its training images when its checkpoint is still at hand."""
    recorded, workdir = dirs.recorded(arm, seed), dirs.workdir(arm.name, seed)
    if recorded is None and not is_finished(workdir, arm):
        return False
    overrides = arm_overrides(study, arm, dirs, final_train_error)
    arguments = config_args(study, seed, overrides, extra_args)
    where = recorded or workdir
    study_records.check_same_protocol(where, arguments, "the record" if recorded else
                                      "the finished run")
    unmeasured = not arm.sweep and (recorded is None or read_train_evaluation(recorded) is None)
    if (unmeasured and dirs.runs is not None and read_completion(workdir) is not None
            and (recorded is None or read_completion(workdir) == read_completion(recorded))):
        _evaluate_training_images(study, arm, seed, dirs, overrides, extra_args, label,
                                  signals)
        if dirs.record is not None:  # (again) with the training images' evaluation
            recorded = None
    if recorded is None and dirs.record is not None:
        study_records.save_record(workdir, study_records.record_dir(dirs.record, arm.name, seed))
    diverged = read_divergence(where) if read_completion(where) is None else None
    state = (f"diverged at step {diverged['step']} (a failed sweep run)" if diverged else
             "complete" + (" (recorded)" if recorded else ""))
    print(f"{label}: {state}", flush=True)
    return True


def _train_one(study: Study, arm: Arm, seed: int, dirs: StudyDirs, extra_args: list[str],
               final_train_error, label: str, signals: _ForwardSignals,
               after_each_run: Callable[[], None]) -> int | None:
    """Train one run to its end; None when the study goes on, else the study's exit code."""
    workdir = dirs.workdir(arm.name, seed)
    overrides = arm_overrides(study, arm, dirs, final_train_error)
    if (workdir / study_records.CONFIG_FILE).exists():
        # resuming would train its remaining steps under the study's config and record the
        # run as made wholly under it
        study_records.check_same_protocol(
            workdir, config_args(study, seed, overrides, extra_args), "the unfinished run")
    command = run_command(study, arm, seed, dirs.runs, overrides, extra_args)
    log = log_path(dirs.runs, arm.name, seed)
    print(f"{label}: training ({log})", flush=True)
    start = time.time()
    code = _run_logged(command, log, signals)
    if code == 0 and not signals.received and read_completion(workdir) is not None:
        _evaluate_training_images(study, arm, seed, dirs, overrides, extra_args, label,
                                  signals)
    if dirs.record is not None and is_finished(workdir, arm):
        study_records.save_record(workdir, study_records.record_dir(dirs.record, arm.name, seed))
    after_each_run()
    if signals.received:
        print(f"{label}: stopped by {signals.received} after {time.time() - start:.0f} s "
              "(checkpoint saved); run the same command again to resume.", flush=True)
        return 1
    if code != 0 and arm.sweep and (diverged := read_divergence(workdir)):
        print(f"{label}: diverged at step {diverged['step']}: scored as a failed sweep run, "
              "the study goes on", flush=True)
        return None
    if code != 0:
        print(f"{label}: failed with exit code {code}; the end of {log}:", flush=True)
        print("".join(log.read_text().splitlines(keepends=True)[-15:]), flush=True)
        return code
    if read_completion(workdir) is None:  # exit 0 without finishing: stopped by a signal
        print(f"{label}: stopped after {time.time() - start:.0f} s before finishing (a stop "
              "signal reached the run; its checkpoint is saved); run the same command again to "
              "resume.", flush=True)
        return 1
    print(f"{label}: done in {time.time() - start:.0f} s", flush=True)
    return None
