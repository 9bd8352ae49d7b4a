"""The paper's claims against the recorded studies: one table row per claim, with the paper's
figure, ours as mean +- standard deviation over the seeds, and a verdict.

A verdict compares the arm's seeds with the baseline's: the difference of their means against
twice its standard error (sqrt(s_a^2 / n_a + s_b^2 / n_b)). Beyond it and in the paper's
direction: "reproduced in direction"; within it: "within the seed spread" (a result too: the
budget cannot tell the two apart); beyond it the other way: "contrary". Fewer than two
finished seeds on either side: no verdict yet.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np


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
    top1, train = _final_top1(run), run.get("final_train_error")
    return None if top1 is None or train is None else top1 - 100 * train


METRICS: dict[str, tuple[str, Callable[[dict], float | None]]] = {
    "top1": ("val top-1 %", _final_top1),
    "gap": ("val - train top-1, points", _gap),
    # a run that never reached the target counts with its epochs: a lower bound
    "epochs_to_target": ("epochs to 25% training error",
                         lambda run: run.get("epochs_to_target") or run.get("epochs")),
}

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
    """The metric of each finished run of `arm` (a study's results.json)."""
    getter = METRICS[metric][1]
    found = []
    for run in results["arms"].get(arm, {}).get("runs", {}).values():
        value = getter(run) if run.get("complete") else None
        if value is not None:
            found.append(float(value))
    return found


def verdict(arm: list[float], baseline: list[float]) -> str:
    """Whether the arm's values are larger than the baseline's beyond the seed spread."""
    if len(arm) < 2 or len(baseline) < 2:
        return f"no verdict yet ({len(arm)} and {len(baseline)} seeds; 2 each needed)"
    difference = float(np.mean(arm) - np.mean(baseline))
    error = math.sqrt(np.var(arm, ddof=1) / len(arm) + np.var(baseline, ddof=1) / len(baseline))
    if abs(difference) <= 2 * error:
        return f"within the seed spread ({difference:+.2f}, 2 SE = {2 * error:.2f})"
    if difference > 0:
        return f"reproduced in direction ({difference:+.2f}, 2 SE = {2 * error:.2f})"
    return f"contrary ({difference:+.2f}, 2 SE = {2 * error:.2f})"


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
        lines.append(
            f"| {claim.text} | {claim.paper} | {claim.protocol} | {METRICS[claim.metric][0]} | "
            f"`{claim.baseline}`: {spread(base)} | `{claim.arm}`: {spread(arm)} | "
            f"{verdict(arm, base)} |")
    return "\n".join(lines) + "\n"
