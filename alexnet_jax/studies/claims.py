"""The paper's claims against the recorded studies: one table row per claim, with the paper's
figure, ours as mean +- standard deviation over the seeds, and a verdict.

A verdict compares the arm's seeds with the baseline's by Welch's t-test at the 5% level, two
sided: the difference of their means against t * SE, SE = sqrt(s_a^2 / n_a + s_b^2 / n_b) and t
the 97.5% quantile of Student's t at Welch's degrees of freedom (rounded down: 4.30 for two
seeds a side, 2.78 for three; a bare 2 SE would call about one in six pure-noise comparisons of
two seeds a result). Beyond it and in the paper's direction: "reproduced in direction"; within
it: "within the seed spread" (a result too: the budget cannot tell the two apart); beyond it the
other way: "contrary". Fewer than two finished seeds on either side: no verdict yet.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np

from alexnet_jax.studies import report


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim: `arm` against `baseline` in `study`, whose `metric` the paper expects to be
    larger for the arm (an error, a gap, epochs)."""

    text: str
    paper: str
    study: str
    baseline: str
    arm: str
    metric: str                 # a key of METRICS
    protocol: str


def _final_top1(run: dict) -> float | None:
    centre = (run.get("final") or {}).get("val_1crop") or {}
    return None if centre.get("top1_error") is None else 100 * centre["top1_error"]


def _gap(run: dict) -> float | None:
    # the report's gap, in points (against the training images evaluated after the run: the
    # error logged while training has dropout on, which would favour the paper's direction)
    gap = report.val_train_gap(run)
    return None if gap is None else 100 * gap


METRICS: dict[str, tuple[str, Callable[[dict], float | None]]] = {
    "top1": ("val top-1 error %", _final_top1),
    "gap": ("val - train top-1 error, points (train: its centre crops evaluated after the run)",
            _gap),
    # a run that never reached the target counts with its epochs: a lower bound, said in
    # the table (the report's convention too)
    "epochs_to_target": ("epochs to 25% training error", report.epochs_to_target),
}
# the smallest step a metric can take: epochs to the target are whole epochs, so two seeds that
# agree exactly still carry a rounding spread (variance resolution^2 / 12, a uniform rounding
# error's); without it, two arms of identical seeds would give a test of bound 0
RESOLUTION = {"epochs_to_target": 1.0}

IMAGENETTE128 = "Imagenette, 128 px, 7 epochs"
CLAIMS = (
    Claim("ReLU trains faster than tanh (Figure 1)", "6x fewer epochs to 25% training error",
          "cifar10_figure1", "relu", "tanh", "epochs_to_target",
          "CIFAR-10 net, no regularisation, rates from a sweep"),
    Claim("LRN lowers CIFAR-10 test error (3.3)", "13% -> 11%", "cifar10_lrn", "lrn",
          "no_lrn", "top1", "CIFAR-10 net, 12 epochs"),
    Claim("LRN lowers ImageNet error (3.3)", "+1.4 top-1 without", "imagenette128_ablations",
          "baseline", "no_lrn", "top1", IMAGENETTE128),
    Claim("overlapping pooling (3.4)", "+0.4 top-1 without", "imagenette128_ablations",
          "baseline", "no_overlap", "top1", IMAGENETTE128),
    Claim("two columns beat one (3.2)", "+1.7 top-1 with one", "imagenette128_ablations",
          "baseline", "one_column", "top1", IMAGENETTE128),
    Claim("PCA lighting (4.1)", "over +1 top-1 without", "imagenette128_ablations",
          "baseline", "no_lighting", "top1", IMAGENETTE128),
    Claim("dropout against overfitting (4.2)", "overfits without: larger val - train gap",
          "imagenette128_ablations", "baseline", "no_dropout", "gap", IMAGENETTE128),
)


def values(results: dict, arm: str, metric: str) -> list[float]:
    """The metric of each finished run of `arm` (a study's results.json); none while the
    arm's value is still to be chosen by its sweep (its runs' protocol is not yet known)."""
    getter = METRICS[metric][1]
    found = []
    if not _chosen(results, arm):
        return found
    for run in results["arms"].get(arm, {}).get("runs", {}).values():
        value = getter(run) if run.get("complete") else None
        if value is not None:
            found.append(float(value))
    return found


def _chosen(results: dict, arm: str) -> bool:
    return results["arms"].get(arm, {}).get("chosen") is not False


def never_reached(results: dict, arm: str) -> list[float]:
    """The epochs of the finished runs of `arm` that never reached the study's target."""
    return [run["epochs"] for run in results["arms"].get(arm, {}).get("runs", {}).values()
            if report.never_reached(run)] if _chosen(results, arm) else []


def verdict(arm: list[float], baseline: list[float], resolution: float = 0.0) -> str:
    """Whether the arm's values are larger than the baseline's beyond the seed spread (each
    arm's variance at least that of rounding to `resolution`)."""
    if len(arm) < 2 or len(baseline) < 2:
        return (f"no verdict yet (seeds: baseline {len(baseline)}, ablated {len(arm)}; "
                "2 each needed)")
    difference = float(np.mean(arm) - np.mean(baseline))
    floor = resolution ** 2 / 12
    a = max(float(np.var(arm, ddof=1)), floor) / len(arm)
    b = max(float(np.var(baseline, ddof=1)), floor) / len(baseline)
    error = math.sqrt(a + b)
    if error == 0:
        return f"cannot be tested ({difference:+.2f}; no spread in either arm)"
    degrees = (a + b) ** 2 / (a ** 2 / (len(arm) - 1) + b ** 2 / (len(baseline) - 1))
    bound = t_quantile_975(degrees) * error
    said = f"{difference:+.2f}, 95% bound {bound:.2f}"
    if abs(difference) <= bound:
        return f"within the seed spread ({said})"
    if difference > 0:
        return f"reproduced in direction ({said})"
    return f"contrary ({said})"


# Student's t, 97.5% quantile, by degrees of freedom (from 30 on: the next tabulated below)
_T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
          9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131,
          16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 21: 2.080, 22: 2.074,
          23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048, 29: 2.045,
          30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_quantile_975(degrees: float) -> float:
    """Student's t 97.5% quantile at `degrees` of freedom, rounded down to a tabulated one
    (the larger, so the more cautious, quantile); the normal's 1.960 for infinitely many."""
    below = [d for d in _T_975 if d <= degrees]
    return _T_975[max(below)] if below and degrees != math.inf else (
        1.960 if degrees == math.inf else _T_975[1])


def spread(found: list[float]) -> str:
    if not found:
        return "-"
    if len(found) == 1:
        return f"{found[0]:.2f} (1 seed)"
    return f"{np.mean(found):.2f} ± {np.std(found, ddof=1):.2f} ({len(found)} seeds)"


def table(results_root: Path) -> str:
    """The claims table, from docs/results/<study>/results.json."""
    lines = ["| claim (paper section) | paper | protocol | measure | baseline arm | ablated arm "
             "| verdict |", "|---|---|---|---|---|---|---|"]
    for claim in CLAIMS:
        path = Path(results_root) / claim.study / "results.json"
        results = json.loads(path.read_text()) if path.exists() else {"arms": {}}
        base = values(results, claim.baseline, claim.metric)
        arm = values(results, claim.arm, claim.metric)
        cells = [f"`{name}`: {spread(found)}" + _notes(results, name)
                 for name, found in ((claim.baseline, base), (claim.arm, arm))]
        lines.append(
            f"| {claim.text} | {claim.paper} | {claim.protocol} | {METRICS[claim.metric][0]} | "
            f"{cells[0]} | {cells[1]} | "
            f"{verdict(arm, base, RESOLUTION.get(claim.metric, 0.0))} |")
    return "\n".join(lines) + "\n"


def _notes(results: dict, arm: str) -> str:
    if not _chosen(results, arm):
        return " (its sweep is unfinished)"
    bounds = never_reached(results, arm)
    if not bounds:
        return ""
    return (f"; {len(bounds)} never reached it, counted as "
            + ", ".join(f"{epochs:g}" for epochs in bounds) + " (a lower bound)")
