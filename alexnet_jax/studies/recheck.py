"""Does today's code reproduce a recorded study? One new run of an arm against its recorded seeds.

A recheck is a study record holding a run of an arm that a recorded study already has (same
protocol, a later commit). Its final value is compared with the recorded seeds of that arm in
two ways: whether it lies within their range, and whether it lies within the 95% prediction
interval for one more seed, mean +- t(0.975, n - 1) * sd * sqrt(1 + 1/n), which is what "lands
within the seeds' spread" means with n seeds (the range of three seeds covers a fourth only half
the time). Neither says the code is unchanged; a value outside the interval says it is not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from alexnet_jax.studies import claims, measures
from alexnet_jax.studies.claims_tables import spread


@dataclass(frozen=True)
class Recheck:
    metric: str
    recorded: dict[str, float]          # {seed: value} of the recorded study's arm
    rechecked: dict[str, float]         # {seed: value} of the recheck's runs of the arm
    prediction_interval: tuple[float, float]

    def within_range(self, value: float) -> bool:
        return min(self.recorded.values()) <= value <= max(self.recorded.values())

    def within_interval(self, value: float) -> bool:
        low, high = self.prediction_interval
        return low <= value <= high


def prediction_interval(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The interval that holds one more draw with probability `level`, for normal draws whose
    mean and spread are estimated from `values` (at least two)."""
    if len(values) < 2:
        raise ValueError("a prediction interval needs at least two recorded values")
    n, mean, sd = len(values), float(np.mean(values)), float(np.std(values, ddof=1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def recheck(recorded_results: dict, recheck_results: dict, arm: str, metric: str) -> Recheck:
    """The recheck's runs of `arm` against the recorded study's (both results.json)."""
    recorded = claims.seed_values(recorded_results, arm, metric)
    rechecked = claims.seed_values(recheck_results, arm, metric)
    if not rechecked:
        raise ValueError(f"the recheck has no finished run of arm {arm!r} with {metric!r}")
    return Recheck(metric, recorded, rechecked, prediction_interval(list(recorded.values())))


def commits(results: dict, arm: str) -> list[str]:
    """The commits that a study record's runs of `arm` name (its report's provenance)."""
    named = (results.get("code") or {}).get("commits") or {}
    return [commit for commit, runs in named.items()
            if any(run.startswith(f"{arm}/") for run in runs)]


# the measures a recheck compares (keys of measures.FIT_GETTERS, in points; their headings are
# the report's, measures.METRICS)
RECHECKED_METRICS = ("top1", "top1_10", "train_eval")


def markdown(checks: list[Recheck], recorded_commits: list[str],
             recheck_commits: list[str]) -> str:
    """A table: each metric's recorded seeds, their 95% prediction interval, the recheck."""
    short = lambda found: ", ".join(c[:7] for c in found) or "none recorded"  # noqa: E731
    lines = [f"| measure | recorded seeds ({short(recorded_commits)}) | mean ± sd | 95% "
             f"prediction interval, one more seed | recheck ({short(recheck_commits)}) | "
             "the same seed recorded | within the seeds' range | within the interval |",
             "|---|---|---|---|---|---|---|---|"]
    for check in checks:
        values = list(check.recorded.values())
        low, high = check.prediction_interval
        for seed, value in check.rechecked.items():
            lines.append(
                f"| {measures.METRICS[check.metric][0]}, % | "
                + ", ".join(f"{v:.2f}" for v in values)
                + f" | {spread(values)} | [{low:.2f}, "
                f"{high:.2f}] | {value:.2f} (seed {seed}) | "
                + (f"{check.recorded[seed]:.2f}" if seed in check.recorded else "-") + " | "
                f"{'yes' if check.within_range(value) else 'no'} | "
                f"{'yes' if check.within_interval(value) else 'no'} |")
    return "\n".join(lines)
