"""A study's results from its runs' workdirs: results.json (here), results.md and results.png
(results_page.py, from it).

Errors are fractions in the JSON and percentages in the Markdown table. A run still in progress
is reported with its latest evaluation and marked as such; only finished runs enter the means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from alexnet_jax.common import provenance
from alexnet_jax.common.errors import UserError
from alexnet_jax.common.run_files import (
    CONFIG_FILE,
    read_completion,
    read_divergence,
    read_records,
    read_train_evaluation,
    surviving_records,
    write_atomically,
)
from alexnet_jax.studies.records import check_same_protocol
from alexnet_jax.studies.results_page import markdown, plot
from alexnet_jax.studies.study import (
    Study,
    StudyDirs,
    arm_overrides,
    as_dirs,
    config_args,
    is_finished,
)

RESULTS_JSON, RESULTS_MD, RESULTS_PNG = "results.json", "results.md", "results.png"
# what a run's first record says of its data: every run of a study must agree on them (data.path
# itself differs between machines and is not compared)
DATA_FACTS = ("dataset", "num_classes", "train_examples", "eval_examples")


def wall_time(records: list[dict[str, Any]]) -> float:
    """Seconds the run's processes spent, summed over its starts (each `run_start` to the last
    record before the next one)."""
    total, start, last = 0.0, None, None
    for record in records:
        if "time" not in record:
            continue
        if record.get("event") == "run_start":
            if start is not None and last is not None:
                total += last - start
            start = record["time"]
        last = record["time"]
    if start is not None and last is not None:
        total += last - start
    return total


def run_result(workdir: Path, target_train_error: float | None = None) -> dict[str, Any]:
    """What one run's workdir says: progress, evaluations, training error per epoch."""
    records = surviving_records(read_records(workdir))
    completion = read_completion(workdir)
    train_lines = [r for r in records if r.get("split") == "train"]
    epoch_lines = [r for r in records if r.get("split") == "train_epoch"]
    # an evaluation of diverged parameters (a non-finite loss) is no result of the run
    centre = [r for r in records if r.get("split") == "val" and r.get("crops") == 1
              and math.isfinite(float(r.get("loss", 0.0)))]
    pick = lambda r: None if r is None else {  # noqa: E731
        "top1_error": r["top1_error"], "top5_error": r["top5_error"], "epoch": r["epoch"],
        "step": r["step"]}
    final = {f"val_{views}crop": None for views in (1, 10)}
    if completion:
        for evaluation in completion.get("eval", []):
            final[f"val_{evaluation['crops']}crop"] = pick(evaluation)
    elif centre:
        final["val_1crop"] = pick(centre[-1])  # the latest, while the run is in progress
    steps = completion["step"] if completion else max([r["step"] for r in train_lines] or [0])
    diverged = read_divergence(workdir)
    starts = [r for r in records if r.get("event") == "run_start"]
    start = starts[0] if starts else {}
    result = {
        "workdir": str(workdir), "complete": completion is not None, "steps": steps,
        "data": {key: start[key] for key in DATA_FACTS if key in start} or None,
        "diverged_at_step": diverged["step"] if diverged else None,
        "epochs": max([r["epoch"] for r in epoch_lines + centre] or [0.0]),
        "wall_time_s": round(wall_time(records), 1), "final": final,
        "best_val_1crop": pick(min(centre, key=lambda r: r["top1_error"])) if centre else None,
        "final_train_error": epoch_lines[-1]["top1_error"] if epoch_lines else None,
        # the training images evaluated after the run (no augmentation, no dropout)
        "final_train_eval_error": (read_train_evaluation(workdir) or {}).get("top1_error"),
        "train_error_by_epoch": [[r["epoch"], r["top1_error"]] for r in epoch_lines],
        "val_top1_by_epoch": [[r["epoch"], r["top1_error"]] for r in centre],
        "protocol": _protocol(workdir),
        # the code of each start (a resumed run may span commits); None: made before records
        # named their code
        "code": [r.get("code") for r in starts] or None,
    }
    if target_train_error:
        reached = [r["epoch"] for r in epoch_lines if r["top1_error"] <= target_train_error]
        result["epochs_to_target"] = reached[0] if reached else None
        result["target_resolution_epochs"] = 1.0
        crossing = running_crossing(train_lines, target_train_error)
        if crossing is not None:   # every step logged: the crossing to the step
            result["epochs_to_target_at_epoch_end"] = result["epochs_to_target"]
            result["epochs_to_target"], result["target_resolution_epochs"] = crossing
    return result


def running_crossing(train_lines: list[dict[str, Any]], target: float
                     ) -> tuple[float | None, float] | None:
    """Where the running training error first reaches `target`: (epochs, one step in epochs),
    epochs None if it never does. The running training error at step s is the mean of the
    training batches' top-1 errors over the last epoch's steps, s - E + 1 ... s (E steps an
    epoch), as they were trained (dropout and augmentation on): at an epoch's last step it is
    that epoch's mean, which the whole-epoch measure reads. None unless the run logged every
    step (train.log_every_steps = 1): a sparser log holds a few batches a window, too few."""
    errors = {int(r["step"]): float(r["top1_error"]) for r in train_lines}
    located = [r for r in train_lines if r.get("epoch")]
    if not located:
        return None
    steps_per_epoch = round(located[0]["step"] / located[0]["epoch"])
    last = max(errors)
    if steps_per_epoch < 1 or len(errors) != last or last < steps_per_epoch:
        return None
    window = sum(errors[step] for step in range(1, steps_per_epoch + 1))
    for step in range(steps_per_epoch, last + 1):
        if step > steps_per_epoch:
            window += errors[step] - errors[step - steps_per_epoch]
        if window / steps_per_epoch <= target:
            return step / steps_per_epoch, 1.0 / steps_per_epoch
    return None, 1.0 / steps_per_epoch


def _protocol(workdir: Path) -> dict[str, Any] | None:
    """What the run's config.json says it was to train: crops, epochs or steps, a target."""
    path = Path(workdir) / CONFIG_FILE
    if not path.exists():
        return None
    config = json.loads(path.read_text())
    data, train = config.get("data", {}), config.get("train", {})
    return {"crop_size": data.get("crop_size"), "num_epochs": train.get("num_epochs"),
            "num_steps": train.get("num_steps"),
            "stop_at_train_error": train.get("stop_at_train_error")}

def final_train_error(workdir: Path) -> float | None:
    """The last epoch's mean training error of a finished run (None while unfinished; infinite
    for a run whose loss became non-finite)."""
    if read_divergence(workdir) is not None:
        return math.inf
    if read_completion(workdir) is None:
        return None
    return run_result(workdir)["final_train_error"]


def collect(study: Study, directory: Path | StudyDirs,
            extra_args: list[str]) -> dict[str, Any]:
    """results.json's content: per arm its overrides and per seed its run's result (read from
    its record when it has one, else from its workdir). A record made under another protocol
    than the study's with `extra_args` (the `--config.*` arguments) is refused, as when the
    study runs, and so is a run in a workdir, finished or not; so are runs that disagree on
    what their data was. An arm whose value a sweep has not chosen yet is checked on every
    other key, and marked `"chosen": false` (the claims table leaves it out)."""
    dirs = as_dirs(directory)
    arms = {}
    for arm in study.arms:
        try:
            overrides, chosen = arm_overrides(study, arm, dirs, final_train_error), True
        except UserError:  # a choice not yet possible (its sweep unfinished): what is known
            overrides, chosen = {**study.overrides, **arm.overrides}, False
        unchosen = frozenset() if chosen or not arm.choose else frozenset({arm.choose["key"]})
        for seed in arm.seeds:
            recorded = dirs.recorded(arm, seed)
            where = recorded or dirs.result(arm, seed)
            if (where / CONFIG_FILE).exists() or is_finished(where, arm):
                check_same_protocol(where, config_args(study, seed, overrides, extra_args),
                                    "the record" if recorded else "the run", unchosen)
        arms[arm.name] = {
            "overrides": arm.overrides, "resolved_overrides": overrides, "paper": arm.paper,
            "sweep": arm.sweep, "choose": arm.choose, "chosen": chosen if arm.choose else None,
            "runs": {str(seed): _result(dirs, arm, seed, study.target_train_error)
                     for seed in arm.seeds}}
    _check_same_data(arms)
    runs = {f"{name}/seed{seed}": run["code"] for name, arm in arms.items()
            for seed, run in arm["runs"].items() if run["complete"] or run["steps"]}
    return {"study": study.name, "description": study.description,
            "base_config": study.base_config, "baseline": study.baseline,
            "target_train_error": study.target_train_error, "arms": arms,
            "code": provenance.commits_summary(runs)}


def _check_same_data(arms: dict[str, Any]) -> None:
    """Refuse a study whose runs trained on different data (another dataset or version of it
    under the same data.name), naming the runs of each kind."""
    kinds: dict[str, list[str]] = {}
    for name, arm in arms.items():
        for seed, run in arm["runs"].items():
            if run.get("data"):
                kinds.setdefault(json.dumps(run["data"], sort_keys=True), []).append(
                    f"{name}/seed{seed}")
    if len(kinds) > 1:
        raise UserError("the study's runs trained on different data, which one table cannot "
                        "compare: " + "; ".join(f"{', '.join(runs)}: {facts}"
                                                for facts, runs in kinds.items()))


def _result(dirs: StudyDirs, arm, seed: int, target: float | None) -> dict[str, Any]:
    result = run_result(dirs.result(arm, seed), target)
    if dirs.record is not None:  # a record's path relative to the report, as it is committed
        result["workdir"] = str(Path(result["workdir"]).relative_to(Path(dirs.record)))
    return result

def write_report(study: Study, directory: Path | StudyDirs, command: str,
                 extra_args: list[str]) -> dict[str, Any]:
    """Write results.json, results.md and results.png into the record directory (from the
    records alone), or without one into the study's run directory; `extra_args`: the study's
    `--config.*` arguments, against which the records are checked."""
    dirs = as_dirs(directory)
    if dirs.record is not None:
        dirs = StudyDirs(None, dirs.record)  # what is committed stands on records only
    results = collect(study, dirs, extra_args)
    directory = dirs.report
    directory.mkdir(parents=True, exist_ok=True)
    write_atomically(directory / RESULTS_JSON, json.dumps(results, indent=1))
    write_atomically(directory / RESULTS_MD, markdown(results, command))
    plot(results, directory / RESULTS_PNG)
    return results
