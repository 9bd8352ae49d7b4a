"""The claims tables (alexnet_jax/studies/claims.py judges each claim): one column list per
kind of table, one function that lays any of them out, and the pages each table goes to. The
README holds the summary, one row a claim (paper, measured, interval, verdict); docs/results.md
the full tables (after convergence, after 7 epochs, and the two side by side).
experiments/claims_table.py writes them between marker comments and checks that they are
current.

To add a column (another verdict, say): a function of a `Judged` claim and one entry in
FULL_COLUMNS and/or SUMMARY_COLUMNS; every table and page follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from alexnet_jax.studies import block_design, measures
from alexnet_jax.studies.claims import (
    CONVERGED_STUDY,
    TABLES,
    Judged,
    ResultCells,
    chosen,
    judge,
    never_reached,
    values,
)

METRICS = {  # the claims' measures (measures.FIT_GETTERS), as the table heads them
    # the primary measure: the centre crop, which every run evaluates after every epoch (the 10
    # views only at the end, shown beside it)
    "top1": "val top-1 error %, centre crop",
    "gap": "val - train top-1 error, points (train: its centre crops evaluated after the run)",
    "epochs_to_target": "epochs to 25% training error",
    "top1_10": "val top-1 error %, 10 views",
    "train_eval": "train top-1 error % (centre crops, after the run)",
}
SHORT_METRICS = {  # the same, as the README's summary names them beside its protocol
    "top1": "val top-1 error %",
    "gap": "val - train top-1 error, points",
    "epochs_to_target": "epochs",
    "top1_10": "10 views",
    "train_eval": "training images",
}


def spread(found: list[float]) -> str:
    if not found:
        return "-"
    if len(found) == 1:
        return f"{found[0]:.2f} (1 seed)"
    return f"{np.mean(found):.2f} ± {np.std(found, ddof=1):.2f}"


def _notes(results: dict, arm: str) -> str:
    if not chosen(results, arm):
        return " (its sweep is unfinished)"
    bounds = never_reached(results, arm)
    if not bounds:
        return ""
    return (f"; {len(bounds)} never reached it, counted as "
            + ", ".join(f"{epochs:g}" for epochs in bounds) + " (a lower bound)")


# The tables' columns: a head and the cell of a judged claim. Every claims table is made from
# such a list by `markdown_table`, so a new column (another verdict, say) is one entry here.
Column = tuple[str, Callable[[Judged], str]]


def _arm_cell(judged: Judged, arm: str, mean_only: bool = False) -> str:
    found = values(judged.results, arm, judged.claim.metric)
    said = (f"{np.mean(found):.2f}" if found else "-") if mean_only else spread(found)
    return f"`{arm}`: {said}" + _notes(judged.results, arm)


def _protocol(judged: Judged) -> str:
    return "; ".join(filter(None, [measures.protocol_text(judged.results),
                                   judged.claim.protocol]))


def _measured(judged: Judged) -> str:
    """Both arms' means, the measure, the protocol the records name and the seeds fitted."""
    claim = judged.claim
    arms = ", ".join(_arm_cell(judged, arm, mean_only=True)
                     for arm in (claim.baseline, claim.arm))
    ran = measures.protocol_text(judged.results)
    seeds = f"n {judged.cells.n}" if judged.cells.n != "-" else ""
    return f"{arms} ({'; '.join(filter(None, [SHORT_METRICS[claim.metric], ran, seeds]))})"


def _relative(judged: Judged) -> str:
    """The paper's effect as the same share of our baseline's error as of the paper's."""
    claim, relative = judged.claim, judged.relative_effect
    if relative is None:
        return "-"
    paper = judged.paper_base_error
    return (f"{relative:+.2f} ({claim.paper_effect:g} of the paper's {paper:g}% is "
            f"{100 * claim.paper_effect / paper:.1f}% of the error; the baseline's here: "
            f"{judged.baseline_mean:.2f}%)")


def _beside(judged: Judged) -> str:
    """The same two arms on the claim's other measures, each as the block fit gives it."""
    claim, said = judged.claim, []
    for metric in claim.beside:
        fit = block_design.block_contrast(
            measures.fit_values(judged.results, metric), claim.baseline, claim.arm,
            measures.metric_resolution(judged.results, metric))
        if fit is not None:
            said.append(f"{SHORT_METRICS[metric]}: {fit.estimate:+.2f} "
                        f"[{fit.low:+.2f}, {fit.high:+.2f}]")
    return "; ".join(said) or "-"


def _caveat(judged: Judged) -> str:
    """What the row's measure says and does not, and whether its records name their code."""
    claim, notes = judged.claim, []
    if claim.caveat:
        notes.append(claim.caveat.format(baseline=judged.baseline_mean or float("nan"),
                                         paper=judged.paper_base_error or float("nan")))
    unrecorded = {run.split("/")[0] for run in judged.results.get("code", {}).get(
        "unrecorded", [])} & {claim.baseline, claim.arm}
    if unrecorded:
        notes.append("no commit recorded")
    return "; ".join(notes) or "-"


FULL_COLUMNS: tuple[Column, ...] = (
    ("claim (paper section)", lambda judged: judged.claim.text),
    ("paper", lambda judged: judged.claim.paper),
    ("protocol", _protocol),
    ("measure", lambda judged: METRICS[judged.claim.metric]),
    ("baseline arm", lambda judged: _arm_cell(judged, judged.claim.baseline)),
    ("ablated arm", lambda judged: _arm_cell(judged, judged.claim.arm)),
    ("n", lambda judged: judged.cells.n),
    ("difference, 95% interval", lambda judged: judged.cells.interval),
    ("Holm p", lambda judged: judged.cells.holm_p),
    ("the paper's size relative to the baseline's error", _relative),
    ("verdict, each size", lambda judged: judged.cells.by_size),
    ("verdict", lambda judged: judged.cells.verdict),
    ("the same arms on other measures", _beside),
    ("caveat", _caveat),
)
SUMMARY_COLUMNS: tuple[Column, ...] = (
    ("claim (paper section)", lambda judged: judged.claim.text),
    ("paper", lambda judged: judged.claim.paper),
    ("measured (means)", _measured),
    ("difference, 95% interval", lambda judged: judged.cells.difference),
    ("verdict (points and relative size)", lambda judged: judged.cells.verdict),
    ("other measures", _beside),
    ("caveat", _caveat),
)


def markdown_table(columns: tuple[Column, ...], rows: list[Judged]) -> str:
    """A Markdown table of `rows`, one judged claim a row, with `columns`' heads and cells."""
    lines = ["| " + " | ".join(head for head, _ in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(judged) for _, cell in columns) + " |" for judged in rows]
    return "\n".join(lines) + "\n"


def table(results_root: Path, name: str = "claims") -> str:
    """One claims table (a key of TABLES), from docs/results/<study>/results.json."""
    return markdown_table(FULL_COLUMNS, judge(results_root, name))


def summary(results_root: Path) -> str:
    """The README's table: one row a claim, as judged in the first of TABLES that holds it
    (at convergence, or after 7 epochs for the claims not run at convergence, with what running
    it there would take), each with its own table's Holm correction."""
    rows: list[Judged] = []
    first, *later = TABLES
    converged = judge(results_root, first)
    rows += converged
    notes: dict[str, str] = {}
    for name in later:
        said = {judged.claim.text for judged in rows}
        for judged in judge(results_root, name):
            if judged.claim.text not in said:
                rows.append(judged)
                notes[judged.claim.text] = _what_convergence_takes(judged, converged)
    def caveat(judged: Judged) -> str:
        return "; ".join(filter(None, [notes.get(judged.claim.text, ""), _caveat(judged)]))

    columns = tuple((head, caveat if head == "caveat" else cell)
                    for head, cell in SUMMARY_COLUMNS)
    return markdown_table(columns, rows)


POWER = 0.8


def _what_convergence_takes(judged: Judged, converged: list[Judged]) -> str:
    """For a claim not run at convergence: the seeds an arm its paper's size would need there
    for 80% power, at the converged study's residual spread (its block fit of the same metric),
    and the CPU-hours, at that study's mean run time; "" where the paper gives no size."""
    claim = judged.claim
    same = [other for other in converged
            if other.claim.study == CONVERGED_STUDY.get(claim.study)
            and other.claim.metric == claim.metric and other.contrast is not None]
    if claim.paper_effect is None or not same or same[0].relative_effect is None:
        return ""
    fit, results = same[0].contrast, same[0].results
    relative = measures.relative_effect(claim.paper_effect, same[0].baseline_mean,
                                        same[0].paper_base_error)
    arms = len(fit.arms) + 1
    needed = [block_design.seeds_for_power(fit.residual_sd, size, arms, POWER)
              for size in (claim.paper_effect, relative)]
    times = [run["wall_time_s"] for arm in results["arms"].values()
             for run in arm.get("runs", {}).values() if run.get("wall_time_s")]
    hours = float(np.mean(times)) / 3600 if times else float("nan")
    shared = len(fit.seeds)

    def cost(seeds):
        if seeds is None:
            return "over 100 seeds an arm"
        runs = seeds + max(0, seeds - shared)
        return f"{seeds} seeds an arm (~{runs * hours:.0f} CPU-hours)"

    return (f"not run at convergence: 80% power there takes {cost(needed[0])} at "
            f"+{claim.paper_effect:g}, {cost(needed[1])} at the relative {relative:+.2f} "
            f"(s = {fit.residual_sd:.2f})")


# The side-by-side table: the 128-pixel claims after 7 epochs beside the same claims at
# convergence, matched by the claim's text.
COMPARED = ("claims-early", "claims")


def side_by_side(results_root: Path) -> str:
    """Each 128-pixel claim's n, difference, interval and verdict early in training beside the
    same claim's at convergence (each with its own table's Holm p), the columns headed by the
    protocols their records name; a claim not run at convergence says so."""
    early, converged = (judge(results_root, name) for name in COMPARED)
    by_text = {judged.claim.text: judged for judged in converged}
    matched = [by_text[judged.claim.text] for judged in early if judged.claim.text in by_text]
    heads = []
    for judged in (early[0], matched[0]):
        named = measures.protocol_text(judged.results)
        heads.append(judged.claim.protocol + (f" ({named})" if named else ""))
    lines = ["| claim (paper section) | paper | measure | "
             + " | ".join(f"{head}: n, difference [95% interval], Holm p | verdict"
                          for head in heads) + " |", "|---|---|---|---|---|---|---|"]
    for judged in early:
        claim = judged.claim
        later = by_text.get(claim.text)
        halves = [_brief(judged.cells),
                  _brief(later.cells) if later else ("not run at convergence", "-")]
        lines.append(f"| {claim.text} | {claim.paper} | {METRICS[claim.metric]} | "
                     + " | ".join(f"{result} | {said}" for result, said in halves) + " |")
    return "\n".join(lines) + "\n"


def _brief(cells: ResultCells) -> tuple[str, str]:
    if cells.n == "-":
        return "-", cells.verdict
    return f"n {cells.n}: {cells.difference}, Holm p {cells.holm_p}", cells.verdict


# Where each table goes, by its marker name: the README holds the summary, the results page
# the full tables (experiments/claims_table.py writes and checks both).
PAGES = {"README.md": ("claims-summary",),
         "docs/results.md": (*TABLES, "claims-compare")}


def tables(results_root: Path) -> dict[str, str]:
    """Every claims table, by its marker name: TABLES', the side-by-side one and the summary."""
    return {**{name: table(results_root, name) for name in TABLES},
            "claims-compare": side_by_side(results_root),
            "claims-summary": summary(results_root)}
