"""A randomized block design's contrasts: arms measured on the same seeds, the seeds as blocks.

Data order and augmentation are functions of (seed, epoch), the same in every arm of a study for
a given seed, so the arms of one seed move together. The additive model

    metric[arm, seed] = mu + arm effect + seed effect + residual

is fitted by least squares, on the seeds the two compared arms share, to every run of every arm
measured on at least two of them: an arm that lacks some of those seeds (more seeds run for the
two arms a claim compares than for the rest) still tells the seed effects and the residual
spread. The contrast of an arm with its baseline is the difference of their means over those
seeds; its standard error is sqrt(2 s^2 / seeds), s^2 the pooled residual variance on
runs - arms - seeds + 1 degrees of freedom ((arms - 1)(seeds - 1) when every arm has every seed),
and its interval uses Student's t there. With two arms this is exactly the paired t-test on the
per-seed differences (tests/test_claims.py checks both against scipy, least squares and
hand-worked cases). The pooled variance assumes the arms spread alike: `arm_spread` gives each
arm's share of it, and `spread_warning` names an arm that spreads several times more.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats

LEVEL = 0.95
# an arm whose residual spread is this many times the other arms' is named: the pooled variance,
# and so the interval, then describe the arms poorly
SPREAD_WARNING = 3.0


@dataclasses.dataclass(frozen=True)
class Contrast:
    """The arm minus the baseline (or, for a ratio, the arm over the baseline) in a block fit."""

    estimate: float
    low: float
    high: float
    p: float                    # two-sided, for "no difference"
    seeds: tuple[str, ...]      # the blocks fitted
    arms: tuple[str, ...]       # the arms fitted
    degrees: int                # residual degrees of freedom
    arm_spread: dict[str, float]  # each arm's residual standard deviation (its share of s^2)
    ratio: bool = False
    residual_sd: float = 0.0    # s, the pooled residual standard deviation (after the floor)
    runs: int = 0               # the runs fitted: arms x seeds where every arm has every seed

    @property
    def complete(self) -> bool:
        """Every fitted arm measured on every fitted seed (else the fit is unbalanced)."""
        return self.runs == len(self.arms) * len(self.seeds)


def block_contrast(by_arm: dict[str, dict[str, float]], baseline: str, arm: str,
                   resolution: float = 0.0, ratio: bool = False) -> Contrast | None:
    """`arm` against `baseline` in the additive model metric = arm + seed, fitted by least
    squares to every run of `by_arm` ({arm: {seed: value}}) on the seeds the two share, from
    every arm measured on at least two of them; None when fewer than two seeds are shared.
    `resolution`: the metric's smallest step (the residual variance is at least its rounding
    variance, resolution^2 / 12). `ratio`: fit the logarithms and give the ratio
    arm / baseline."""
    seeds = tuple(sorted(set(by_arm.get(baseline, {})) & set(by_arm.get(arm, {})), key=int))
    if len(seeds) < 2:
        return None
    # an arm seen on one of the seeds only adds a parameter for its one value: nothing to fit
    arms = tuple(name for name, found in by_arm.items()
                 if name in (baseline, arm) or len(set(seeds) & set(found)) >= 2)
    cells = [(row, column, float(by_arm[name][seed]))
             for row, name in enumerate(arms) for column, seed in enumerate(seeds)
             if seed in by_arm[name]]
    values = np.array([value for *_, value in cells])
    if ratio:
        values = np.log(values)
    # one indicator per arm and per seed; the design is connected (the two compared arms have
    # every seed), so its rank is arms + seeds - 1
    design = np.zeros((len(cells), len(arms) + len(seeds)))
    for index, (row, column, _) in enumerate(cells):
        design[index, row] = design[index, len(arms) + column] = 1.0
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    residuals = values - design @ coefficients
    degrees = len(cells) - len(arms) - len(seeds) + 1
    variance = float((residuals ** 2).sum()) / degrees
    means = {name: float(np.mean([by_arm[name][seed] for seed in seeds]))
             for name in (baseline, arm)}
    floor = resolution ** 2 / 12
    if ratio and floor:  # on the log scale, by the delta method at the two arms' means
        floor *= (1 / means[arm] ** 2 + 1 / means[baseline] ** 2) / 2
    variance = max(variance, floor)
    # each arm's share: the mean of the squared shares is the pooled variance
    rows = np.array([row for row, *_ in cells])
    arm_spread = {name: float(math.sqrt((residuals[rows == index] ** 2).sum() * len(arms)
                                        / degrees))
                  for index, name in enumerate(arms)}
    # both compared arms have every fitted seed, so their least-squares difference is the
    # difference of their means over those seeds, with variance 2 s^2 / seeds
    compared = {name: float(np.mean(values[rows == arms.index(name)])) for name in means}
    difference = compared[arm] - compared[baseline]
    error = math.sqrt(2 * variance / len(seeds))
    if error == 0:
        p = 1.0 if difference == 0 else 0.0
        low = high = difference
    else:
        p = float(2 * stats.t.sf(abs(difference) / error, degrees))
        half = float(stats.t.ppf(0.5 + LEVEL / 2, degrees)) * error
        low, high = difference - half, difference + half
    if ratio:
        difference, low, high = math.exp(difference), math.exp(low), math.exp(high)
    return Contrast(difference, low, high, p, seeds, arms, degrees, arm_spread, ratio,
                    math.sqrt(variance), len(cells))


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of the p-values that are not None (a family of tests)."""
    indexed = sorted((p, index) for index, p in enumerate(p_values) if p is not None)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, index) in enumerate(indexed):
        running = max(running, min(1.0, (len(indexed) - rank) * p))
        adjusted[index] = running
    return adjusted


def spread_warning(contrast: Contrast) -> str:
    """Names an arm whose residual spread is SPREAD_WARNING times the other arms' or more."""
    notes = []
    for name, spread_of in contrast.arm_spread.items():
        others = [s for other, s in contrast.arm_spread.items() if other != name]
        typical = math.sqrt(float(np.mean(np.square(others)))) if others else 0.0
        if len(contrast.arms) > 2 and spread_of >= SPREAD_WARNING * max(typical, 1e-12):
            notes.append(f"`{name}` spreads {spread_of / max(typical, 1e-12):.1f}x the "
                         "other arms")
    return "; ".join(notes)


def power(residual_sd: float, effect: float, seeds: int, arms: int,
          degrees: int | None = None) -> float:
    """The probability that a block design of `arms` arms x `seeds` seeds, whose residuals have
    standard deviation `residual_sd`, finds a true contrast `effect` at the 5% level (two-sided;
    the noncentral t of the contrast's statistic). `degrees`: the fit's residual degrees of
    freedom where some arms lack some seeds (a Contrast's); else (arms - 1)(seeds - 1)."""
    if degrees is None:
        degrees = (arms - 1) * (seeds - 1)
    if degrees < 1:
        return 0.0
    if residual_sd <= 0:  # no spread measured: any effect is found (and none can be sized)
        return 1.0 if effect else 0.0
    shift = effect / (residual_sd * math.sqrt(2 / seeds))
    critical = float(stats.t.ppf(0.5 + LEVEL / 2, degrees))
    # the lower tail P(T < -c | shift) written as P(T > c | -shift): scipy's nct.cdf returns nan
    # far in its tail (df 4, shift 8.4), where sf of the mirrored shift gives its true ~0
    return float(stats.nct.sf(critical, degrees, shift) + stats.nct.sf(critical, degrees, -shift))


# the power table's cautious reading: the residual spread at its upper one-sided bound at this
# confidence (a spread measured on few degrees of freedom is often well below the true one; the
# pilot's 2 x 2 fit has a single degree, where s can be a quarter of sigma one time in five)
SPREAD_BOUND_CONFIDENCE = 0.8


def residual_sd_upper(residual_sd: float, degrees: int,
                      confidence: float = SPREAD_BOUND_CONFIDENCE) -> float:
    """The upper one-sided `confidence` bound of the residual standard deviation sigma, from its
    estimate `residual_sd` on `degrees` degrees of freedom: s * sqrt(df / chi2_{1-confidence}(df)),
    since df s^2 / sigma^2 follows chi-square with df degrees. Planning seeds at this bound
    instead of at s guards the power table against a spread that happened to come out small."""
    if degrees < 1:
        raise ValueError(f"a spread needs at least one degree of freedom, not {degrees}")
    return residual_sd * math.sqrt(degrees / float(stats.chi2.ppf(1 - confidence, degrees)))


def seeds_for_power(residual_sd: float, effect: float, arms: int, target: float = 0.8,
                    most: int = 100) -> int | None:
    """The fewest seeds an arm with which a design of `arms` arms reaches `target` power for a
    contrast of size `effect`; None if `most` seeds would not."""
    for seeds in range(2, most + 1):
        if power(residual_sd, effect, seeds, arms) >= target:
            return seeds
    return None
