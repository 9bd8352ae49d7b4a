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

from alexnet_jax.studies import measures
from alexnet_jax.studies.claims import (
    TABLES,
    Judged,
    ResultCells,
    chosen,
    judge,
    never_reached,
    values,
)

METRICS = {  # the claims' measures (measures.FIT_GETTERS), as the table heads them
    "top1": "val top-1 error %",
    "gap": "val - train top-1 error, points (train: its centre crops evaluated after the run)",
    "epochs_to_target": "epochs to 25% training error",
}
SHORT_METRICS = {  # the same, as the README's summary names them beside its protocol
    "top1": "val top-1 error %",
    "gap": "val - train top-1 error, points",
    "epochs_to_target": "epochs",
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
    ("verdict", lambda judged: judged.cells.verdict),
)
SUMMARY_COLUMNS: tuple[Column, ...] = (
    ("claim (paper section)", lambda judged: judged.claim.text),
    ("paper", lambda judged: judged.claim.paper),
    ("measured (mean of the seeds)", _measured),
    ("difference, 95% interval", lambda judged: judged.cells.difference),
    ("verdict", lambda judged: judged.cells.verdict),
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
    (at convergence, or after 7 epochs for the claims not run at convergence), each with its
    own table's Holm correction."""
    rows: list[Judged] = []
    for name in TABLES:
        said = {judged.claim.text for judged in rows}
        rows += [judged for judged in judge(results_root, name) if judged.claim.text not in said]
    return markdown_table(SUMMARY_COLUMNS, rows)


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
