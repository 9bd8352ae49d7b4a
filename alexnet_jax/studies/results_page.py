"""A study's page: results.md (the comparison table, the sweep, the block fit of each arm against
the baseline) and results.png (curves and final errors), from results.json's content
(report.collect)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_jax.common import provenance
from alexnet_jax.studies import block_design, measures
from alexnet_jax.studies.measures import (
    METRICS,
    _final,
    _values,
    epochs_text,
    epochs_to_target,
    never_reached,
    protocol_text,
    val_train_gap,
)


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
    ran = protocol_text(results)
    lines = [f"# Study `{results['study']}`", "", results["description"].strip(), "",
             *([f"What ran (from the records): {ran}.", ""] if ran else []),
             f"Base config `{results['base_config']}`; reproduce with `{command}`. Errors in %, "
             "mean ± standard deviation over the seeds' finished runs; Δ: difference to the "
             f"baseline arm `{results['baseline']}` in percentage points (positive = worse).", ""]
    if code := provenance.commits_text(results.get("code") or {"commits": {}, "dirty": [],
                                                                "unrecorded": []}):
        lines += [code, ""]
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
        epochs = sorted({epochs_text(run["epochs"]) for run in runs if run["complete"]})
        gap = _values(arm, val_train_gap)  # per run: a run lacking one of the two has no gap
        changes = [f"`{k}={v}`" for k, v in arm["overrides"].items()]
        if arm["choose"]:
            changes.append(_choice(arm) + ("" if arm.get("chosen") is False
                                           else " (chosen by the sweep)"))
        changes = ", ".join(changes) or "(baseline)"
        started = [run for run in runs if not run["complete"] and run["steps"] > 0]
        row = [f"`{name}`", changes, f"{finished}/{len(runs)}" + (
            "" if not started else " (running: " + ", ".join(
                f"epoch {epochs_text(run['epochs'])}" for run in started) + ")"),
            "/".join(epochs) or "-",
            _mean_spread(columns["top1"]), _delta(columns["top1"], _values(base, METRICS["top1"][1])),
            _mean_spread(columns["top5"]), _delta(columns["top5"], _values(base, METRICS["top5"][1])),
            _mean_spread(columns["top1_10"]), _mean_spread(columns["top5_10"]),
            _mean_spread(columns["train"]), _mean_spread(columns["train_eval"]),
            _mean_spread(gap)]
        if target:
            reached = _values(arm, lambda run: run.get("epochs_to_target"))
            missing = [run for run in runs if never_reached(run)]
            text = "/".join(epochs_text(v) for v in reached)
            if missing:
                text += " (not reached: " + ", ".join(
                    f">{epochs_text(run['epochs'])}" for run in missing) + ")"
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
            epochs = "/".join(sorted({epochs_text(run["epochs"]) for run in runs})) or "-"
            diverged = [f"diverged at step {run['diverged_at_step']}"
                        for run in arm["runs"].values() if run["diverged_at_step"] is not None]
            train = ", ".join(filter(None, [
                _mean_spread(_values(arm, METRICS['train'][1])) if runs else "", *diverged]))
            lines.append(f"| `{name}` | {changes} | {epochs} | {train or '-'} | "
                         f"{_mean_spread(_values(arm, METRICS['top1'][1]))} |")
        chosen = [f"`{name}`: " + _choice(arm) for name, arm in arms.items() if arm["choose"]]
        lines += ["", "Chosen: " + ("; ".join(chosen) or "-")]
    return "\n".join(lines + _block_fit(results)) + "\n"


BLOCK_FIT_METRICS = {  # the measures (measures.FIT_GETTERS) a block fit is reported for:
    # heading, ratio
    "top1": ("val top-1 error (centre), points", False),
    "gap": ("val − train top-1 error (after the run), points", False),
    "epochs_to_target": ("epochs to the training-error target", True),
}


def _block_fit(results: dict[str, Any]) -> list[str]:
    """Each arm against the baseline in the study's randomized block design (seeds as blocks;
    block_design.py), with each arm's share of the pooled residual spread: the check that the
    arms spread alike, which the pooled interval assumes."""
    target = results.get("target_train_error")
    names = ("epochs_to_target",) if target else ("top1", "gap")
    compared = measures.compared_arms(results)
    lines = []
    for metric in names:
        heading, ratio = BLOCK_FIT_METRICS[metric]
        by_arm = measures.fit_values(results, metric)
        rows, fits = [], []
        for name in by_arm:
            if name == results["baseline"]:
                continue
            contrast = block_design.block_contrast(
                by_arm, results["baseline"], name,
                measures.metric_resolution(results, metric), ratio)
            if contrast is None:
                continue
            fits.append(contrast)
            estimate = (f"{contrast.estimate:.2f}x [{contrast.low:.2f}, {contrast.high:.2f}]"
                        if ratio else f"{contrast.estimate:+.2f} [{contrast.low:+.2f}, "
                        f"{contrast.high:+.2f}]")
            rows.append(f"| `{name}` | {', '.join(contrast.seeds)} | {len(contrast.arms)} | "
                        f"{contrast.degrees} | {estimate} | {contrast.p:.3f} | "
                        f"{contrast.residual_sd:.3f} |")
        if rows:
            widest = max(fits, key=lambda fit: fit.degrees)
            warning = block_design.spread_warning(widest)
            lines += ["", f"Block fit, {heading} (seeds as blocks: metric = arm + seed; the "
                      "interval from the pooled residual variance, Student's t"
                      + ("; on the logarithm, as a ratio" if ratio else "") + "):", "",
                      "| arm vs baseline | seeds | arms fitted | df | difference, 95% interval "
                      "| p | pooled residual sd |", "|---|---|---|---|---|---|---|", *rows, "",
                      f"Each arm's residual spread in the fit of {fit_size(widest)} (the mean "
                      "of their squares is the pooled variance; the interval assumes they are "
                      "alike): "
                      + ", ".join(f"`{arm}` {value:.2f}"
                                  for arm, value in widest.arm_spread.items())
                      + (f". **{warning}**." if warning else ".")]
            if metric == "top1":
                lines += _power_table(results, widest, len(compared))
    return lines


def fit_size(fit: block_design.Contrast) -> str:
    """"4 arms x 5 seeds", with the runs fitted where some arms lack some seeds."""
    return (f"{len(fit.arms)} arms x {len(fit.seeds)} seeds"
            + ("" if fit.complete else f" ({fit.runs} runs)"))


POWER = 0.8


def _power_table(results: dict[str, Any], fit: block_design.Contrast, arms: int) -> list[str]:
    """For each arm the paper gives a top-1 size for: the seeds an arm that a design of all the
    study's `arms` needs for 80% power at that size, with the residual spread of `fit`, the
    top-1 block fit of the runs so far with the most degrees of freedom."""
    sized = {name: arm["paper"]["top1"] for name, arm in results["arms"].items()
             if (arm.get("paper") or {}).get("top1") is not None and not arm["sweep"]}
    if not sized:
        return []
    cautious_sd = block_design.residual_sd_upper(fit.residual_sd, fit.degrees)
    by_arm = measures.fit_values(results, "top1")
    # each arm's power with the seeds it shares with the baseline so far, in its own fit
    own_fits = {name: block_design.block_contrast(by_arm, results["baseline"], name)
                for name in sized}

    def needed(spread: float, effect: float) -> str:
        count = block_design.seeds_for_power(spread, effect, arms, POWER)
        return str(count) if count is not None else "over 100"

    baseline = by_arm.get(results.get("baseline"), {})
    paper_error = measures.paper_base_error(results)
    base_error = (float(np.mean(list(baseline.values())))
                  if baseline and paper_error else None)
    sizes = []
    for name, effect in sized.items():
        sizes.append((name, f"{effect:+g}", effect))
        if base_error is not None:  # the same share of our baseline's error as of the paper's
            relative = measures.relative_effect(effect, base_error, paper_error)
            sizes.append((name, f"{relative:+.2f} (relative)", relative))

    def power_so_far(name: str, effect: float) -> str:
        own = own_fits[name]
        if own is None:
            return "-"
        found = block_design.power(fit.residual_sd, effect, len(own.seeds), len(own.arms),
                                   own.degrees)
        return f"{found:.2f} ({len(own.seeds)} seeds, df {own.degrees})"

    rows = [f"| `{name}` | {said} | {power_so_far(name, effect)} | "
            f"{needed(fit.residual_sd, effect)} | {needed(cautious_sd, effect)} |"
            for name, said, effect in sizes]
    confidence = block_design.SPREAD_BOUND_CONFIDENCE
    return ["", f"Seeds for {POWER:.0%} power at the paper's effect size, from the residual "
            f"spread so far (s = {fit.residual_sd:.2f} points, from {fit_size(fit)}, df "
            f"{fit.degrees}), for a design of the study's {arms} "
            "arms (5% level, two-sided). A spread measured on few degrees of freedom is "
            f"uncertain, so the last column plans at its upper {confidence:.0%} bound "
            f"(s = {cautious_sd:.2f}: the true spread lies below it with {confidence:.0%} "
            "confidence). Each size twice where the paper's error is known: its points, and "
            "the same share of the baseline's error as of the paper's "
            f"({paper_error or float('nan'):g}%: relative):", "",
            "| arm | paper's effect, points | power with its seeds so far | "
            f"seeds needed | seeds needed at the spread's upper {confidence:.0%} bound |",
            "|---|---|---|---|---|", *rows]


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
