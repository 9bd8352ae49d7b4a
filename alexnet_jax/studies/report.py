"""A study's results from its runs' workdirs: results.json, results.md and results.png.

Errors are fractions in the JSON and percentages in the Markdown table. A run still in progress
is reported with its latest evaluation and marked as such; only finished runs enter the means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

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
    centre = [r for r in records if r.get("split") == "val" and r.get("crops") == 1]
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
    start = next((r for r in records if r.get("event") == "run_start"), {})
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
    }
    if target_train_error:
        reached = [r["epoch"] for r in epoch_lines if r["top1_error"] <= target_train_error]
        result["epochs_to_target"] = reached[0] if reached else None
    return result


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
    return {"study": study.name, "description": study.description,
            "base_config": study.base_config, "baseline": study.baseline,
            "target_train_error": study.target_train_error, "arms": arms}


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


def _values(arm: dict[str, Any], getter) -> list[float]:
    values = []
    for run in arm["runs"].values():
        if run["complete"]:
            value = getter(run)
            if value is not None:
                values.append(float(value))
    return values


def epochs_to_target(run: dict[str, Any]) -> float | None:
    """The epochs a run of a study with a training-error target took to reach it; for a run
    that ended without reaching it, the epochs it trained (a lower bound, marked by
    `never_reached`: counting it keeps the slowest seeds in the mean, where leaving it out
    would make its arm look faster). None without a target."""
    if "epochs_to_target" not in run:
        return None
    return run["epochs"] if run["epochs_to_target"] is None else run["epochs_to_target"]


def never_reached(run: dict[str, Any]) -> bool:
    """A finished run that ended without reaching its study's training-error target."""
    return bool(run["complete"]) and "epochs_to_target" in run and run["epochs_to_target"] is None


def _final(view: str, key: str):
    return lambda run: (run["final"].get(view) or {}).get(key)


def val_train_gap(run: dict[str, Any]) -> float | None:
    """Validation minus training top-1 error (fractions) of a run in results.json, the training
    images evaluated like the validation ones after the run; None if either is missing."""
    # the error logged while training has dropout and augmentation on: no measure of the fit
    top1, train = _final("val_1crop", "top1_error")(run), run.get("final_train_eval_error")
    return None if top1 is None or train is None else top1 - train


METRICS = {  # column -> (heading, getter)
    "top1": ("val top-1 error (centre)", _final("val_1crop", "top1_error")),
    "top5": ("val top-5 error (centre)", _final("val_1crop", "top5_error")),
    "top1_10": ("val top-1 error (10 views)", _final("val_10crop", "top1_error")),
    "top5_10": ("val top-5 error (10 views)", _final("val_10crop", "top5_error")),
    "train": ("train error (last epoch)", lambda run: run["final_train_error"]),
    "train_eval": ("train top-1 error (centre, after the run)",
                   lambda run: run.get("final_train_eval_error")),
}


def _choice(arm: dict[str, Any]) -> str:
    """The value an arm takes from its sweep, as the report says it; while the sweep is
    unfinished, that it has none yet (not the base config's value, which no run will use)."""
    key = arm["choose"]["key"]
    if arm.get("chosen") is False:
        return f"`{key}` not chosen yet"
    return f"`{key}={arm['resolved_overrides'].get(key)}`"


def _mean_spread(values: list[float], scale: float = 100.0) -> str:
    if not values:
        return "-"
    mean = scale * float(np.mean(values))
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {scale * float(np.std(values, ddof=1)):.2f}"


def _delta(values: list[float], base: list[float]) -> str:
    if not values or not base:
        return "-"
    return f"{100 * (np.mean(values) - np.mean(base)):+.2f}"


def markdown(results: dict[str, Any], command: str) -> str:
    """results.md: the comparison table (and the sweep table, when there is a sweep)."""
    arms = results["arms"]
    base = arms[results["baseline"]]
    target = results.get("target_train_error")
    lines = [f"# Study `{results['study']}`", "", results["description"].strip(), "",
             f"Base config `{results['base_config']}`; reproduce with `{command}`. Errors in %, "
             "mean ± standard deviation over the seeds' finished runs; Δ: difference to the "
             f"baseline arm `{results['baseline']}` in percentage points (positive = worse).", ""]
    heading = ["arm", "changes", "finished runs", "epochs"]
    heading += [METRICS["top1"][0], "Δ top-1", METRICS["top5"][0], "Δ top-5",
                METRICS["top1_10"][0], METRICS["top5_10"][0], METRICS["train"][0],
                METRICS["train_eval"][0], "val − train (top-1, after the run)"]
    if target:
        heading += [f"epochs to {100 * target:g}% training error", "ratio to baseline"]
    heading.append("paper Δ top-1 / top-5")
    lines += ["| " + " | ".join(heading) + " |", "|" + "---|" * len(heading)]
    base_epochs = _values(base, epochs_to_target)
    base_censored = any(never_reached(run) for run in base["runs"].values())
    for name, arm in arms.items():
        if arm["sweep"]:
            continue
        columns = {key: _values(arm, getter) for key, (_, getter) in METRICS.items()}
        runs = list(arm["runs"].values())
        finished = sum(run["complete"] for run in runs)
        epochs = sorted({f"{run['epochs']:g}" for run in runs if run["complete"]})
        gap = _values(arm, val_train_gap)  # per run: a run lacking one of the two has no gap
        changes = [f"`{k}={v}`" for k, v in arm["overrides"].items()]
        if arm["choose"]:
            changes.append(_choice(arm) + ("" if arm.get("chosen") is False
                                           else " (chosen by the sweep)"))
        changes = ", ".join(changes) or "(baseline)"
        started = [run for run in runs if not run["complete"] and run["steps"] > 0]
        row = [f"`{name}`", changes, f"{finished}/{len(runs)}" + (
            "" if not started else " (running: " + ", ".join(
                f"epoch {run['epochs']:g}" for run in started) + ")"),
            "/".join(epochs) or "-",
            _mean_spread(columns["top1"]), _delta(columns["top1"], _values(base, METRICS["top1"][1])),
            _mean_spread(columns["top5"]), _delta(columns["top5"], _values(base, METRICS["top5"][1])),
            _mean_spread(columns["top1_10"]), _mean_spread(columns["top5_10"]),
            _mean_spread(columns["train"]), _mean_spread(columns["train_eval"]),
            _mean_spread(gap)]
        if target:
            reached = _values(arm, lambda run: run.get("epochs_to_target"))
            missing = [run for run in runs if never_reached(run)]
            text = "/".join(f"{v:g}" for v in reached) + ("" if not missing else
                                                           " (not reached: " + ", ".join(
                                                               f">{run['epochs']:g}" for run in missing) + ")")
            row.append(text or "-")
            counted = _values(arm, epochs_to_target)  # a run not reaching it: its epochs
            if not counted or not base_epochs:
                row.append("-")
            elif base_censored:  # neither a value nor a bound
                row.append("- (baseline runs did not all reach it)")
            else:
                row.append(("≥" if missing else "") + f"{np.mean(counted) / np.mean(base_epochs):.2f}")
        paper = arm.get("paper") or {}
        figures = " / ".join(f"{paper[k]:+g}" for k in ("top1", "top5") if k in paper)
        note = f"({paper['note']})" if paper.get("note") else ""
        row.append(" ".join(filter(None, [figures, note])) or "-")
        lines.append("| " + " | ".join(row) + " |")
    sweep = {name: arm for name, arm in arms.items() if arm["sweep"]}
    if sweep:
        lines += ["", "Sweep (each arm's choice is the value whose runs ended with the lowest "
                  "training error):", "",
                  "| sweep arm | changes | epochs | train error (last epoch) | val top-1 error (centre) |",
                  "|---|---|---|---|---|"]
        for name, arm in sweep.items():
            runs = [run for run in arm["runs"].values() if run["complete"]]
            changes = ", ".join(f"`{k}={v}`" for k, v in arm["overrides"].items())
            epochs = "/".join(sorted({f"{run['epochs']:g}" for run in runs})) or "-"
            diverged = [f"diverged at step {run['diverged_at_step']}"
                        for run in arm["runs"].values() if run["diverged_at_step"] is not None]
            train = ", ".join(filter(None, [
                _mean_spread(_values(arm, METRICS['train'][1])) if runs else "", *diverged]))
            lines.append(f"| `{name}` | {changes} | {epochs} | {train or '-'} | "
                         f"{_mean_spread(_values(arm, METRICS['top1'][1]))} |")
        chosen = [f"`{name}`: " + _choice(arm) for name, arm in arms.items() if arm["choose"]]
        lines += ["", "Chosen: " + ("; ".join(chosen) or "-")]
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    """Curves (training error against epochs when the study has a training-error target, as the
    paper's Figure 1; else validation top-1 error) and a bar chart of the final errors."""
    import matplotlib  # noqa: PLC0415
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    arms = {name: arm for name, arm in results["arms"].items() if not arm["sweep"]}
    target = results.get("target_train_error")
    curve_key = "train_error_by_epoch" if target else "val_top1_by_epoch"
    figure, (curves, bars) = plt.subplots(1, 2, figsize=(13, 4.8))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, (name, arm) in enumerate(arms.items()):
        colour = colours[index % len(colours)]
        for seed_index, run in enumerate(arm["runs"].values()):
            points = np.array(run[curve_key], dtype=float).reshape(-1, 2)
            if len(points):
                curves.plot(points[:, 0], 100 * points[:, 1], "-", color=colour, lw=1.2,
                            marker="." if len(points) < 40 else None,
                            alpha=1.0 if seed_index == 0 else 0.45,
                            label=name if seed_index == 0 else None)
    if target:
        curves.axhline(100 * target, color="k", ls="--", lw=0.8,
                       label=f"{100 * target:g}% training error")
    curves.set_xlabel("epoch")
    curves.set_ylabel(("training" if target else "validation top-1 (centre crop)") + " error (%)")
    curves.grid(alpha=0.3)
    curves.legend(fontsize=8)
    names = list(arms)
    # a training-error target: the epochs each arm needed (Figure 1's claim); else final error
    getter = epochs_to_target if target else METRICS["top1"][1]
    scale = 1.0 if target else 100.0
    means = [np.mean(_values(arms[n], getter)) if _values(arms[n], getter) else np.nan
             for n in names]
    bars.bar(range(len(names)), [scale * m for m in means], color=[
        colours[i % len(colours)] for i in range(len(names))], alpha=0.6)
    for i, name in enumerate(names):
        runs = [run for run in arms[name]["runs"].values() if run["complete"]]
        for bound in (False, True):  # a run that never reached the target: its epochs, ▲
            values = [getter(run) for run in runs if never_reached(run) == bound]
            values = [v for v in values if v is not None]
            bars.plot([i] * len(values), [scale * v for v in values], "k^" if bound else "ko",
                      ms=4, mfc="none" if bound else "k")
    bars.set_xticks(range(len(names)), names, rotation=30, ha="right")
    bars.set_ylabel(f"epochs to {100 * target:g}% training error, seeds as dots (▲: not "
                    "reached, its epochs)" if target
                    else "final validation top-1 error (%), seeds as dots")
    finite = [m for m in means if not math.isnan(m)]
    if finite and not target:
        low = 100 * min(min(_values(arms[n], getter) or [1]) for n in names)
        bars.set_ylim(max(0.0, low - 5), 100 * max(finite) + 5)
    bars.grid(axis="y", alpha=0.3)
    figure.suptitle(f"study {results['study']}")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


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

