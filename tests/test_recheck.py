"""A recheck run against a recorded study's seeds (alexnet_jax/studies/recheck.py). No JAX."""

from __future__ import annotations

import math

import pytest

from alexnet_jax.studies import recheck


def results(errors: dict[str, float], commit: str) -> dict:
    """A results.json with arm `baseline`'s runs ending at these centre-crop errors (%)."""
    runs = {seed: {"complete": True, "final": {"val_1crop": {"top1_error": error / 100}}}
            for seed, error in errors.items()}
    return {"arms": {"baseline": {"runs": runs}},
            "code": {"commits": {commit: [f"baseline/seed{seed}" for seed in errors]}}}


def test_the_prediction_interval_is_the_t_interval_for_one_more_draw():
    low, high = recheck.prediction_interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 * math.sqrt(1 + 1 / 3)   # t(0.975, 2), sd 1
    assert (low, high) == pytest.approx((2 - half, 2 + half))
    with pytest.raises(ValueError, match="at least two"):
        recheck.prediction_interval([1.0])


def test_a_recheck_inside_the_interval_but_outside_the_range_is_told_apart():
    recorded = results({"0": 21.0, "1": 22.0, "2": 21.5}, "a" * 40)
    check = recheck.recheck(recorded, results({"0": 22.6}, "b" * 40), "baseline", "top1")
    assert check.recorded == pytest.approx({"0": 21.0, "1": 22.0, "2": 21.5})
    assert not check.within_range(22.6) and check.within_interval(22.6)
    assert not check.within_interval(30.0) and check.within_range(21.2)
    table = recheck.markdown([check], recheck.commits(recorded, "baseline"), ["b" * 40])
    row = table.splitlines()[-1]
    assert "21.00, 22.00, 21.50" in row and "22.60 (seed 0) | 21.00 | no | yes |" in row
    assert "(aaaaaaa)" in table and "(bbbbbbb)" in table


def test_a_recheck_without_the_arm_is_refused():
    recorded = results({"0": 21.0, "1": 22.0}, "a" * 40)
    with pytest.raises(ValueError, match="no finished run of arm 'baseline'"):
        recheck.recheck(recorded, {"arms": {}}, "baseline", "top1")
