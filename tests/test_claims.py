"""The claims' statistics (a randomized block design, Holm's correction, the four verdicts), the
provenance a report gives, and the claims table's command line. No JAX: fast."""

import dataclasses
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats
from test_cli import REPO

from alexnet_jax.common import provenance
from alexnet_jax.studies import block_design, claims, claims_tables, measures
from alexnet_jax.studies.block_design import block_contrast


def by_arm(**arms):
    return {name: {str(seed): value for seed, value in enumerate(values)}
            for name, values in arms.items()}


def test_two_arms_are_the_paired_t_test_scipy_computes():
    base, arm = [36.9, 36.4, 37.2, 35.0], [34.1, 35.3, 33.3, 34.8]
    contrast = block_contrast(by_arm(base=base, arm=arm), "base", "arm")
    paired = stats.ttest_rel(arm, base)
    interval = paired.confidence_interval(0.95)
    assert contrast.estimate == pytest.approx(np.mean(arm) - np.mean(base))
    assert contrast.p == pytest.approx(paired.pvalue)
    assert (contrast.low, contrast.high) == (pytest.approx(interval.low),
                                             pytest.approx(interval.high))
    assert contrast.degrees == 3 and contrast.seeds == ("0", "1", "2", "3")


def test_a_hand_worked_paired_case():
    # differences 1 and 2: mean 1.5, sd 0.7071, SE 0.5 on 1 degree of freedom; t 12.706
    contrast = block_contrast(by_arm(base=[1.0, 3.0], arm=[2.0, 5.0]), "base", "arm")
    assert contrast.estimate == pytest.approx(1.5)
    assert (contrast.low, contrast.high) == (pytest.approx(1.5 - 12.7062 * 0.5, abs=1e-3),
                                             pytest.approx(1.5 + 12.7062 * 0.5, abs=1e-3))
    assert contrast.p == pytest.approx(2 * stats.t.sf(3.0, 1))


def test_several_arms_pool_the_residuals_of_the_additive_model_as_least_squares_does():
    rng = np.random.default_rng(0)
    values = {name: list(10 + shift + np.array([0.0, 3.0, -2.0, 1.0]) + rng.normal(0, 1, 4))
              for name, shift in (("base", 0.0), ("a", 1.0), ("b", -0.5), ("c", 2.0))}
    contrast = block_contrast(by_arm(**values), "base", "c")
    # the same model by least squares: an intercept, three arm and three seed indicators
    names, seeds = list(values), range(4)
    design, target = [], []
    for i, name in enumerate(names):
        for j in seeds:
            design.append([1.0] + [float(i == k) for k in (1, 2, 3)]
                          + [float(j == k) for k in (1, 2, 3)])
            target.append(values[name][j])
    design, target = np.array(design), np.array(target)
    fitted, residual_ss, *_ = np.linalg.lstsq(design, target, rcond=None)
    degrees = len(target) - design.shape[1]
    assert contrast.degrees == degrees == 9        # (arms - 1)(seeds - 1)
    variance = residual_ss[0] / degrees
    error = math.sqrt(variance * np.linalg.inv(design.T @ design)[3, 3])
    assert contrast.estimate == pytest.approx(fitted[3])          # c's effect over base
    half = stats.t.ppf(0.975, degrees) * error
    assert (contrast.low, contrast.high) == (pytest.approx(fitted[3] - half),
                                             pytest.approx(fitted[3] + half))
    assert contrast.p == pytest.approx(2 * stats.t.sf(abs(fitted[3]) / error, degrees))
    # each arm's share of the pooled variance: their mean square is the pooled variance
    shares = np.array(list(contrast.arm_spread.values()))
    assert np.mean(shares ** 2) == pytest.approx(variance)


def test_an_arm_missing_a_seed_fits_as_the_textbook_missing_value_says():
    """One run missing from an arm the claim does not compare: least squares on the runs there
    are equals the complete table with Yates's missing value put in its cell (whose residual is
    then 0), on one degree of freedom fewer (Cochran & Cox; the formula is independent of the
    fit under test)."""
    rng = np.random.default_rng(3)
    names, seeds = ("base", "a", "b", "c"), 5
    table = np.array([[20 + shift + block + rng.normal(0, 0.5) for block in (0, 2, -1, 1, 3)]
                      for shift in (0.0, 0.4, -0.3, 1.0)])
    values = {name: {str(seed): float(table[row, seed]) for seed in range(seeds)}
              for row, name in enumerate(names)}
    del values["b"]["4"]
    arms = len(names)
    row_total = sum(values["b"].values())
    column_total = sum(values[name]["4"] for name in names if "4" in values[name])
    grand = sum(sum(found.values()) for found in values.values())
    filled = table.copy()
    filled[2, 4] = (arms * row_total + seeds * column_total - grand) / ((arms - 1) * (seeds - 1))
    residuals = (filled - filled.mean(axis=1, keepdims=True) - filled.mean(axis=0, keepdims=True)
                 + filled.mean())
    assert residuals[2, 4] == pytest.approx(0, abs=1e-9)
    contrast = block_contrast(values, "base", "c")
    assert contrast.arms == names and contrast.runs == arms * seeds - 1
    assert contrast.degrees == (arms - 1) * (seeds - 1) - 1
    assert contrast.residual_sd ** 2 * contrast.degrees == pytest.approx((residuals ** 2).sum())
    assert contrast.estimate == pytest.approx(table[3].mean() - table[0].mean())
    error = contrast.residual_sd * math.sqrt(2 / seeds)
    half = stats.t.ppf(0.975, contrast.degrees) * error
    assert contrast.high - contrast.estimate == pytest.approx(half)


def test_seeds_as_blocks_decide_where_unpaired_seeds_cannot():
    """The seeds move every arm together (the same data order): the blocked interval excludes 0
    where Welch's test of the same numbers sees only the seeds' spread."""
    base, arm = [30.0, 34.0, 38.0], [31.0, 35.2, 38.9]
    contrast = block_contrast(by_arm(base=base, arm=arm), "base", "arm")
    assert claims.verdict(contrast, 1.4) == "reproduced"
    welch = stats.ttest_ind(arm, base, equal_var=False)
    assert welch.pvalue > 0.5 and contrast.p < 0.01


def test_the_four_verdicts_read_the_interval():
    contrast = lambda estimate, low, high: block_design.Contrast(  # noqa: E731
        estimate, low, high, 0.01, ("0", "1"), ("a", "b"), 1, {})
    assert claims.verdict(contrast(2.0, 0.5, 3.5), 1.4) == "reproduced"
    assert claims.verdict(contrast(-2.0, -3.5, -0.5), 1.4) == "contrary"
    assert claims.verdict(contrast(0.1, -0.5, 0.9), 1.4) == "paper's effect excluded"
    assert claims.verdict(contrast(0.1, -0.5, 2.0), 1.4) == "inconclusive"
    assert claims.verdict(contrast(0.1, -0.5, 0.9), None).startswith("inconclusive (the paper")
    # a reproduced claim says where the paper's size lies
    assert claims.size_note(contrast(4.5, 2.1, 6.9), 1.7) == (
        "; the paper's +1.7 lies below the interval")
    assert claims.size_note(contrast(2.0, 0.5, 3.5), 1.4) == ""


def test_holm_steps_down_over_the_tests_that_have_a_p_value():
    adjusted = block_design.holm([0.01, 0.04, 0.03, None])
    assert adjusted == [pytest.approx(0.03), pytest.approx(0.06), pytest.approx(0.06), None]
    assert block_design.holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]


def test_a_ratio_of_whole_epochs_keeps_the_rounding_spread():
    contrast = block_contrast(by_arm(relu=[7.0, 7.0, 7.0], tanh=[18.0, 18.0, 18.0]), "relu",
                              "tanh", resolution=1.0, ratio=True)
    assert contrast.estimate == pytest.approx(18 / 7)
    assert 2.0 < contrast.low < 18 / 7 < contrast.high < 3.2  # a width from rounding alone
    assert claims.verdict(contrast, 6.0) == "reproduced"
    assert "the paper's 6x lies above" in claims.size_note(contrast, 6.0)
    same = block_contrast(by_arm(a=[7.0, 7.0], b=[7.0, 7.0]), "a", "b", resolution=1.0)
    assert same.low < 0 < same.high                           # not "untestable"


def test_a_seed_missing_in_a_compared_arm_is_left_out_and_other_arms_need_the_shared_seeds():
    values = by_arm(base=[30.0, 31.0, 29.0], arm=[32.0, 33.5, 31.0], short=[28.0, 29.0])
    values["arm"].pop("2")
    contrast = block_contrast(values, "base", "arm")
    assert contrast.seeds == ("0", "1") and contrast.arms == ("base", "arm", "short")
    values["short"].pop("1")
    assert block_contrast(values, "base", "arm").arms == ("base", "arm")
    assert block_contrast(by_arm(base=[1.0], arm=[2.0]), "base", "arm") is None


def test_an_arm_spreading_several_times_more_is_named():
    values = by_arm(base=[30.0, 31.0, 29.0, 30.5, 30.2], a=[31.0, 32.1, 30.0, 31.4, 31.2],
                    b=[29.0, 30.1, 27.9, 29.6, 29.2], c=[30.5, 31.4, 29.6, 31.0, 30.6],
                    wild=[35.0, 26.0, 37.0, 27.0, 31.0])
    warning = block_design.spread_warning(block_contrast(values, "base", "a"))
    assert warning.startswith("`wild` spreads") and "x the other arms" in warning
    calm = by_arm(base=[30.0, 31.0, 29.0], a=[31.0, 32.1, 30.0], b=[29.0, 30.1, 27.9])
    assert block_design.spread_warning(block_contrast(calm, "base", "a")) == ""


def through_verdict(row: str) -> str:
    """A full table's row up to its verdict cell (the other measures and the caveat follow)."""
    return row.rsplit(" | ", 2)[0] + " |"


def results_with(runs_by_arm, protocol=None, data=None):
    """A results.json with top-1 errors (fractions) per arm and seed."""
    protocol = protocol or {"crop_size": 128, "num_epochs": 30, "num_steps": -1,
                            "stop_at_train_error": 0.0}
    data = data or {"dataset": "imagenette"}
    return {"arms": {name: {"sweep": False, "runs": {
        str(seed): {"complete": True, "final": {"val_1crop": {"top1_error": error}},
                    "protocol": protocol, "data": data, "epochs": 30.0}
        for seed, error in enumerate(errors)}} for name, errors in runs_by_arm.items()}}


def test_the_table_shows_n_the_interval_holm_p_and_the_verdict(tmp_path):
    results = results_with({"baseline": [0.30, 0.34, 0.38], "no_lrn": [0.32, 0.355, 0.395],
                            "one_column": [0.31, 0.35, 0.385], "no_dropout": [0.3, 0.34, 0.38]})
    (tmp_path / "imagenette128_converged").mkdir()
    (tmp_path / "imagenette128_converged" / "results.json").write_text(json.dumps(results))
    table = claims_tables.table(tmp_path, "claims")
    row = next(line for line in table.splitlines() if line.startswith("| LRN lowers ImageNet"))
    contrast = block_contrast(by_arm(baseline=[30.0, 34.0, 38.0], no_lrn=[32.0, 35.5, 39.5],
                                     one_column=[31.0, 35.0, 38.5],
                                     no_dropout=[30.0, 34.0, 38.0]), "baseline", "no_lrn")
    assert "| imagenette, 128 px, 30 epochs; to convergence |" in row
    assert (f"| 3 | {contrast.estimate:+.2f} [{contrast.low:+.2f}, {contrast.high:+.2f}] "
            "(4 arms x 3 seeds, df 6) |") in row
    two = [c.p for c in (contrast, block_contrast(
        by_arm(baseline=[30.0, 34.0, 38.0], no_lrn=[32.0, 35.5, 39.5],
               one_column=[31.0, 35.0, 38.5], no_dropout=[30.0, 34.0, 38.0]),
        "baseline", "one_column"))]
    holm_p = claims._p_text(block_design.holm(two)[0])
    assert f"| {holm_p} | " in row and row.split(" | ")[11] == "reproduced"
    # the claims whose studies have no records yet: no verdict, said
    assert "no verdict yet (finished seeds: relu 0, tanh 0" in table


def test_the_protocol_comes_from_the_records():
    results = results_with({"base": [0.3]}, protocol={"crop_size": 67, "num_epochs": 1,
                                                      "num_steps": 20,
                                                      "stop_at_train_error": 0.0},
                           data={"dataset": "folder"})
    assert measures.protocol_text(results) == "folder, 67 px, 20 steps"
    results = results_with({"base": [0.3]}, protocol={"crop_size": 24, "num_epochs": 30,
                                                      "num_steps": -1,
                                                      "stop_at_train_error": 0.25},
                           data={"dataset": "cifar10"})
    assert measures.protocol_text(results) == (
        "cifar10, 24 px, to 25% training error (at most 30 epochs)")
    assert measures.epochs_text(20 / 28) == "0.71" and measures.epochs_text(7.0) == "7"


def test_claims_table_refuses_a_folder_without_any_studys_results(tmp_path):
    record = tmp_path / "imagenette128_converged"   # what run_study --record writes
    (record / "baseline" / "seed0").mkdir(parents=True)
    (record / "results.json").write_text(json.dumps({"arms": {}}))
    command = [sys.executable, "experiments/claims_table.py", f"--results={record}"]
    refused = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert refused.returncode == 2 and refused.stdout == ""
    assert f"{record} holds no study's results" in refused.stderr
    assert "docs/results" in refused.stderr
    helped = subprocess.run([*command, "--help"], cwd=REPO, capture_output=True, text=True)
    assert "each study's record folder" in helped.stdout
    works = subprocess.run([*command[:2], f"--results={tmp_path}"], cwd=REPO,
                           capture_output=True, text=True)
    assert works.returncode == 0 and "| LRN lowers ImageNet error" in works.stdout


def git(repo, *arguments):
    """Run git in `repo`; the HEAD commit after it (None before the first commit)."""
    subprocess.run(["git", "-C", str(repo), *arguments], check=True, capture_output=True)
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    return head.stdout.strip() if head.returncode == 0 else None


def test_a_report_says_when_its_runs_span_commits_that_changed_the_measured_code(tmp_path):
    repo = tmp_path / "repo"
    (repo / "alexnet_jax" / "model").mkdir(parents=True)
    (repo / "README.md").write_text("a\n")
    (repo / "alexnet_jax" / "model" / "alexnet.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    first = git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    (repo / "README.md").write_text("b\n")
    git(repo, "add", ".")
    prose = git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "two")
    code = lambda commit, dirty=False: [{"commit": commit, "dirty": dirty}]  # noqa: E731
    summary = provenance.commits_summary({"a/seed0": code(first), "a/seed1": code(prose),
                                          "b/seed0": None}, repo=repo)
    assert summary["commits"] == {first: ["a/seed0"], prose: ["a/seed1"]}
    assert summary["unrecorded"] == ["b/seed0"] and summary["changed"] == {}
    text = provenance.commits_text(summary)
    assert f"`{first[:10]}` (1 run)" in text and "None of these commits changed" in text
    assert "b/seed0" in text
    (repo / "alexnet_jax" / "model" / "alexnet.py").write_text("x = 2\n")
    git(repo, "add", ".")
    changed = git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "three")
    summary = provenance.commits_summary({"a/seed0": code(first),
                                          "a/seed1": code(changed, dirty=True)}, repo=repo)
    assert summary["changed"] == {changed: ["alexnet_jax/model/alexnet.py"]}
    assert summary["dirty"] == ["a/seed1"]
    text = provenance.commits_text(summary)
    assert "**The runs span commits that changed the measured code**" in text
    assert "alexnet_jax/model/alexnet.py" in text and "uncommitted changes: a/seed1" in text
    unknown = provenance.commits_summary({"a/seed0": code(first), "a/seed1": code("f" * 40)},
                                         repo=repo)
    assert unknown["changed"] is None


def test_power_is_what_simulated_block_designs_find():
    rng = np.random.default_rng(1)
    arms, seeds, sd, effect = 4, 3, 1.2, 1.7
    found = 0
    trials = 2000
    for _ in range(trials):
        seed_effects = rng.normal(0, 5, seeds)   # blocks: removed by the design
        values = {name: list(30 + shift + seed_effects + rng.normal(0, sd, seeds))
                  for name, shift in (("base", 0.0), ("arm", effect), ("x", 0.5), ("y", -1.0))}
        contrast = block_contrast(by_arm(**values), "base", "arm")
        found += contrast.p < 0.05
    expected = block_design.power(sd, effect, seeds, arms)
    assert found / trials == pytest.approx(expected, abs=3 * math.sqrt(0.25 / trials))
    needed = block_design.seeds_for_power(sd, effect, arms)
    assert block_design.power(sd, effect, needed, arms) >= 0.8
    assert block_design.power(sd, effect, needed - 1, arms) < 0.8


def test_a_study_page_shows_the_block_fit_each_arms_spread_and_the_seeds_for_power():
    from alexnet_jax.studies import results_page  # noqa: PLC0415

    results = results_with({"baseline": [0.30, 0.34, 0.38], "no_lrn": [0.32, 0.355, 0.395],
                            "one_column": [0.31, 0.35, 0.385]})
    results.update(baseline="baseline", target_train_error=None)
    results["arms"]["no_lrn"]["paper"] = {"top1": 1.4}
    lines = "\n".join(results_page._block_fit(results))
    contrast = block_contrast(by_arm(baseline=[30.0, 34.0, 38.0], no_lrn=[32.0, 35.5, 39.5],
                                     one_column=[31.0, 35.0, 38.5]), "baseline", "no_lrn")
    assert (f"| `no_lrn` | 0, 1, 2 | 3 | 4 | {contrast.estimate:+.2f} [{contrast.low:+.2f}, "
            f"{contrast.high:+.2f}] | {contrast.p:.3f} |") in lines
    assert "Each arm's residual spread in the fit of 3 arms x 3 seeds" in lines
    needed = block_design.seeds_for_power(contrast.residual_sd, 1.4, 3)
    cautious = block_design.seeds_for_power(
        block_design.residual_sd_upper(contrast.residual_sd, contrast.degrees), 1.4, 3)
    assert cautious > needed
    so_far = block_design.power(contrast.residual_sd, 1.4, 3, 3)
    assert f"| `no_lrn` | +1.4 | {so_far:.2f} (3 seeds, df 4) | {needed} | {cautious} |" in lines


def test_a_study_pages_power_so_far_is_each_arms_own_fit_when_arms_have_more_seeds():
    """Two more seeds for the baseline and no_lrn only: no_lrn's power is that of its 5 seeds on
    the unbalanced fit's degrees of freedom, one_column's that of its 3."""
    from alexnet_jax.studies import results_page  # noqa: PLC0415

    results = results_with({"baseline": [0.30, 0.34, 0.38, 0.31, 0.36],
                            "no_lrn": [0.32, 0.355, 0.395, 0.318, 0.37],
                            "one_column": [0.31, 0.35, 0.385]})
    results.update(baseline="baseline", target_train_error=None)
    for name in ("no_lrn", "one_column"):
        results["arms"][name]["paper"] = {"top1": 1.4}
    lines = "\n".join(results_page._block_fit(results))
    assert "in the fit of 3 arms x 5 seeds (13 runs)" in lines
    values = measures.fit_values(results, "top1")
    widest = block_contrast(values, "baseline", "no_lrn")
    assert widest.degrees == 13 - 3 - 5 + 1
    five = block_design.power(widest.residual_sd, 1.4, 5, 3, widest.degrees)
    three = block_design.power(widest.residual_sd, 1.4, 3, 3, 4)
    assert f"| `no_lrn` | +1.4 | {five:.2f} (5 seeds, df 6) |" in lines
    assert f"| `one_column` | +1.4 | {three:.2f} (3 seeds, df 4) |" in lines


def test_power_is_a_probability_far_in_the_noncentral_tail():
    """scipy's nct.cdf is nan for a large shift (df 4, shift 8.4: a small spread against the
    paper's size); power must still be a number near 1, not nan that no seed count passes."""
    for residual_sd, seeds in ((0.2041, 3), (0.1668, 2), (0.05, 5)):
        value = block_design.power(residual_sd, 1.4, seeds, 3)
        assert 0.9 < value <= 1.0
    assert block_design.seeds_for_power(0.1668, 1.4, 3) == 2
    grid = [block_design.power(sd, 1.4, seeds, arms) for sd in np.geomspace(0.005, 5, 30)
            for seeds in (2, 3, 5, 10) for arms in (2, 4, 6)]
    assert all(0.0 <= value <= 1.0 for value in grid)


def test_the_spreads_upper_bound_holds_sigma_as_often_as_its_confidence_says():
    """df s^2 / sigma^2 is chi-square on df degrees, so sigma lies below the bound in 80% of
    samples, however few the degrees; the pilot's single degree gives about 3.95 s."""
    assert block_design.residual_sd_upper(1.0, 1) == pytest.approx(3.9472, abs=1e-4)
    rng = np.random.default_rng(2)
    trials, sigma = 4000, 1.3
    for degrees in (1, 6):
        s = sigma * np.sqrt(rng.chisquare(degrees, trials) / degrees)
        held = np.mean([sigma <= block_design.residual_sd_upper(x, degrees) for x in s])
        assert held == pytest.approx(0.8, abs=3 * math.sqrt(0.16 / trials))
    with pytest.raises(ValueError, match="degree"):
        block_design.residual_sd_upper(1.0, 0)


def test_identical_differences_of_errors_keep_one_images_rounding_spread():
    """Errors move in steps of one validation image: two seeds whose differences agree exactly
    still give an interval (not [1.0, 1.0] with p = 0), and power is defined."""
    results = results_with({"baseline": [0.30, 0.34], "no_lrn": [0.31, 0.35]},
                           data={"dataset": "imagenette", "eval_examples": 4000})
    contrast = claims.analyse(results, claims.TABLES["claims"][2])
    assert measures.metric_resolution(results, "top1") == pytest.approx(100 / 4000)
    assert contrast.low < 1.0 < contrast.high and contrast.p > 0
    assert contrast.residual_sd == pytest.approx(math.sqrt((100 / 4000) ** 2 / 12))
    assert block_design.power(0.0, 1.4, 3, 4) == 1.0 and block_design.power(0.0, 0.0, 3, 4) == 0


def test_a_difference_the_tables_family_does_not_bear_out_is_said_so(tmp_path):
    """The verdict reads the claim's own interval; where Holm's p over the table is 5% or more
    the row says "(not after Holm)"."""
    values = {"baseline": [0.300, 0.340, 0.380], "no_lrn": [0.314, 0.357, 0.402],
              "one_column": [0.326, 0.348, 0.383], "no_dropout": [0.300, 0.352, 0.388]}
    results = results_with(values)
    (tmp_path / "imagenette128_converged").mkdir()
    (tmp_path / "imagenette128_converged" / "results.json").write_text(json.dumps(results))
    by = by_arm(**{name: [100 * v for v in found] for name, found in values.items()})
    raw = [block_contrast(by, "baseline", arm).p for arm in ("no_lrn", "one_column")]
    adjusted = block_design.holm(raw)
    assert raw[0] < 0.05 <= adjusted[0] == pytest.approx(2 * raw[0])   # 2 claims with a p
    table = claims_tables.table(tmp_path, "claims")
    row = next(line for line in table.splitlines() if line.startswith("| LRN lowers ImageNet"))
    assert f"| {adjusted[0]:.3f} | " in row
    assert through_verdict(row).endswith("| reproduced (not after Holm) |")
    other = next(line for line in table.splitlines() if line.startswith("| two columns"))
    assert f"| {adjusted[1]:.3f} | " in other
    assert through_verdict(other).endswith("| inconclusive |")


def figure1_results(relu_epochs, tanh_epochs, reached_by_arm):
    """A cifar10_figure1 results.json: epochs per seed, and whether each arm reached 25%."""
    def run(epochs, reached):
        return {"complete": True, "epochs": float(epochs), "final": {},
                "epochs_to_target": float(epochs) if reached else None,
                "data": {"dataset": "cifar10", "eval_examples": 10000}}
    return {"arms": {arm: {"sweep": False, "runs": {str(seed): run(epochs, reached_by_arm[arm])
                                                    for seed, epochs in enumerate(found)}}
                     for arm, found in (("relu", relu_epochs), ("tanh", tanh_epochs))}}


def figure1_row(tmp_path, results):
    (tmp_path / "cifar10_figure1").mkdir(exist_ok=True)
    (tmp_path / "cifar10_figure1" / "results.json").write_text(json.dumps(results))
    table = claims_tables.table(tmp_path, "claims")
    return next(line for line in table.splitlines() if line.startswith("| ReLU trains"))


def test_runs_that_never_reached_the_target_give_no_size_read_off_a_bound(tmp_path):
    """tanh stopped at 30 epochs short of 25%: its ratio is a lower bound, so the paper's 6x
    cannot lie above it, nor be excluded by it; ReLU's runs stopping short open the other end."""
    measured = figure1_row(tmp_path, figure1_results([6, 6, 6], [18, 18, 18],
                                                     {"relu": True, "tanh": True}))
    assert "| reproduced; the paper's 6x lies above the interval" in measured
    bounded = figure1_row(tmp_path, figure1_results([6, 6, 6], [30, 30, 30],
                                                    {"relu": True, "tanh": False}))
    assert through_verdict(bounded).endswith("| reproduced |")   # slower, by at least 4.4x
    assert "interval's upper end as open" in bounded and "3 never reached it" in bounded
    near = figure1_row(tmp_path, figure1_results([25, 28, 30], [30, 30, 30],
                                                  {"relu": True, "tanh": False}))
    contrast = claims.analyse(figure1_results([25, 28, 30], [30, 30, 30],
                                              {"relu": True, "tanh": False}),
                              claims.TABLES["claims"][0])
    assert contrast.high < 6.0 and claims.verdict(contrast, 6.0) == "paper's effect excluded"
    assert through_verdict(near).endswith("| inconclusive |")    # not excluded by a bound
    # ReLU short of the target: tanh may be less than 1.3x slower, never more than 1.4x
    short_relu = figure1_results([30, 30, 30], [40, 41, 40], {"relu": False, "tanh": True})
    assert claims.verdict(claims.analyse(short_relu, claims.TABLES["claims"][0]),
                          6.0) == "reproduced"
    slow_relu = figure1_row(tmp_path, short_relu)
    assert through_verdict(slow_relu).endswith("| paper's effect excluded |")
    assert "lower end as open" in slow_relu


def test_an_arm_left_out_of_the_fit_is_named_in_the_row(tmp_path):
    results = results_with({"baseline": [0.30, 0.34, 0.38], "no_lrn": [0.32, 0.355, 0.395],
                            "one_column": [0.31]})
    (tmp_path / "imagenette128_converged").mkdir()
    (tmp_path / "imagenette128_converged" / "results.json").write_text(json.dumps(results))
    rows = claims_tables.table(tmp_path, "claims").splitlines()
    lrn = next(line for line in rows if line.startswith("| LRN lowers ImageNet"))
    assert "(paired, df 2; `one_column` left out of the fit: measured on fewer than two of " \
           "seeds 0, 1, 2)" in lrn
    column = next(line for line in rows if line.startswith("| two columns"))
    assert "no verdict yet" in column


def test_an_arm_that_lacks_some_seeds_still_counts_in_the_fit_and_the_row_says_how_many_runs(
        tmp_path):
    """Seeds 3 and 4 run for the two arms a claim compares only: the other arms' three seeds
    still inform the seed effects and the spread, and the row counts the runs fitted."""
    results = results_with({"baseline": [0.30, 0.34, 0.38, 0.31, 0.36],
                            "no_lrn": [0.32, 0.355, 0.395, 0.318, 0.37],
                            "one_column": [0.31, 0.35, 0.392]})
    (tmp_path / "imagenette128_converged").mkdir()
    (tmp_path / "imagenette128_converged" / "results.json").write_text(json.dumps(results))
    rows = claims_tables.table(tmp_path, "claims").splitlines()
    lrn = next(line for line in rows if line.startswith("| LRN lowers ImageNet"))
    assert "(3 arms x 5 seeds, 13 runs, df 6)" in lrn
    column = next(line for line in rows if line.startswith("| two columns"))
    assert "(3 arms x 3 seeds, df 4; seed 3, 4 left out: not in both arms)" in column


def test_the_gaps_rounding_step_counts_both_of_its_evaluations():
    results = results_with({"baseline": [0.3]}, data={"dataset": "imagenette",
                                                      "eval_examples": 3925,
                                                      "train_examples": 9469})
    assert measures.metric_resolution(results, "top1") == pytest.approx(100 / 3925)
    assert measures.metric_resolution(results, "gap") == pytest.approx(
        math.hypot(100 / 3925, 100 / 9469))
    assert measures.metric_resolution(results, "epochs_to_target") == 1.0


def test_the_side_by_side_table_puts_each_claims_early_verdict_beside_its_converged_one(
        tmp_path):
    """The same claim's cells from the 7-epoch table and from the converged one, in one row,
    under heads naming the protocols the records give; a claim with no converged counterpart
    says it was not run there."""
    early = results_with({"baseline": [0.37, 0.36, 0.38], "no_lrn": [0.34, 0.33, 0.36],
                          "no_overlap": [0.38, 0.37, 0.39], "one_column": [0.41, 0.40, 0.43],
                          "no_lighting": [0.36, 0.37, 0.37], "no_dropout": [0.37, 0.36, 0.38]},
                         protocol={"crop_size": 128, "num_epochs": 7, "num_steps": -1,
                                   "stop_at_train_error": 0.0})
    converged = results_with({"baseline": [0.21, 0.22, 0.23], "no_lrn": [0.23, 0.235, 0.25]})
    for study, results in (("imagenette128_ablations", early),
                           ("imagenette128_converged", converged)):
        (tmp_path / study).mkdir()
        (tmp_path / study / "results.json").write_text(json.dumps(results))
    compared = claims_tables.side_by_side(tmp_path).splitlines()
    assert "early training (imagenette, 128 px, 7 epochs): n" in compared[0]
    assert "to convergence (imagenette, 128 px, 30 epochs): n" in compared[0]

    def cells(name, text):
        judged = next(j for j in claims.judge(tmp_path, name) if j.claim.text == text)
        return (f"n {judged.cells.n}: {judged.cells.difference}, Holm p {judged.cells.holm_p} "
                f"| {judged.cells.verdict}")

    text = "LRN lowers ImageNet error (3.3)"
    lrn = next(line for line in compared if line.startswith(f"| {text}"))
    assert lrn.endswith(f"| {cells('claims-early', text)} | {cells('claims', text)} |")
    assert "| contrary" in lrn and lrn.endswith("| reproduced |")   # the verdict turned round
    pooling = next(line for line in compared if line.startswith("| overlapping pooling"))
    assert pooling.endswith("| not run at convergence | - |")
    column = next(line for line in compared if line.startswith("| two columns"))
    assert column.endswith("| - | no verdict yet (finished seeds: baseline 3, one_column 0; "
                           "2 shared seeds needed) |")
    every_table = claims_tables.tables(tmp_path)
    assert every_table["claims-compare"] == "\n".join(compared) + "\n"
    assert set(every_table) == {"claims", "claims-early", "claims-compare", "claims-summary"}
    assert {name for names in claims_tables.PAGES.values() for name in names} == set(every_table)


def test_the_summary_has_one_row_a_claim_judged_at_convergence_where_it_was_run_there(
        tmp_path):
    """The README's table: every claim once, with the cells of the table that judged it (its
    Holm correction included): the converged claims, then those run only for 7 epochs."""
    early = results_with({"baseline": [0.37, 0.36, 0.38], "no_lrn": [0.34, 0.33, 0.36],
                          "no_overlap": [0.38, 0.37, 0.39], "one_column": [0.41, 0.40, 0.43],
                          "no_lighting": [0.36, 0.37, 0.37], "no_dropout": [0.37, 0.36, 0.38]},
                         protocol={"crop_size": 128, "num_epochs": 7, "num_steps": -1,
                                   "stop_at_train_error": 0.0})
    converged = results_with({"baseline": [0.21, 0.22, 0.23], "no_lrn": [0.23, 0.235, 0.25],
                              "one_column": [0.22, 0.24, 0.24]})
    for study, results in (("imagenette128_ablations", early),
                           ("imagenette128_converged", converged)):
        (tmp_path / study).mkdir()
        (tmp_path / study / "results.json").write_text(json.dumps(results))
    rows = claims_tables.summary(tmp_path).splitlines()
    assert rows[0] == ("| claim (paper section) | paper | measured (means) | "
                       "difference, 95% interval | verdict (points and relative size) | other "
                       "measures | caveat |")
    texts = [row.split(" | ")[0][2:] for row in rows[2:]]
    assert texts == [claim.text for claim in claims.TABLES["claims"]] + [
        "overlapping pooling (3.4)", "PCA lighting (4.1)"]

    def judged(name, text):
        return next(j for j in claims.judge(tmp_path, name) if j.claim.text == text)

    lrn, pooling = (next(row for row in rows if row.startswith(f"| {text}"))
                    for text in ("LRN lowers ImageNet", "overlapping pooling"))
    cells = judged("claims", "LRN lowers ImageNet error (3.3)").cells
    assert f" | {cells.difference} | {cells.verdict} | " in lrn
    assert ("| `baseline`: 22.00, `no_lrn`: 23.83 (val top-1 error %; imagenette, 128 px, "
            "30 epochs; n 3) |") in lrn
    cells = judged("claims-early", "overlapping pooling (3.4)").cells
    assert f" | {cells.difference} | {cells.verdict} | " in pooling
    assert "7 epochs; n 3" in pooling
    figure1 = next(row for row in rows if row.startswith("| ReLU"))
    assert ("| `relu`: -, `tanh`: - (epochs) | - | no verdict yet (finished seeds: relu 0, "
            "tanh 0; 2 shared seeds needed) |") in figure1


def test_a_column_added_to_a_list_reaches_its_tables(tmp_path, monkeypatch):
    """How another verdict gets into the tables: one entry in the column lists."""
    converged = results_with({"baseline": [0.21, 0.22, 0.23], "no_lrn": [0.23, 0.235, 0.25]})
    (tmp_path / "imagenette128_converged").mkdir()
    (tmp_path / "imagenette128_converged" / "results.json").write_text(json.dumps(converged))
    extra = ("arms", lambda judged: f"{judged.claim.baseline} / {judged.claim.arm}")
    monkeypatch.setattr(claims_tables, "SUMMARY_COLUMNS", (*claims_tables.SUMMARY_COLUMNS, extra))
    monkeypatch.setattr(claims_tables, "FULL_COLUMNS", (*claims_tables.FULL_COLUMNS, extra))
    for made in (claims_tables.summary(tmp_path), claims_tables.table(tmp_path, "claims")):
        lines = made.splitlines()
        assert lines[0].endswith("| arms |") and lines[1].count("---") == lines[0].count(" | ") + 1
        assert next(line for line in lines if "LRN lowers ImageNet" in line).endswith(
            "| baseline / no_lrn |")


def with_gap_and_views(results, train_errors, ten_view_errors):
    """`results` whose runs also have the training images' error and 10-view error."""
    for name, arm in results["arms"].items():
        for seed, run in arm["runs"].items():
            run["final_train_eval_error"] = train_errors[name][int(seed)]
            run["final"]["val_10crop"] = {"top1_error": ten_view_errors[name][int(seed)]}
    return results


def test_an_effect_is_excluded_only_when_its_points_and_its_relative_size_both_are(tmp_path):
    """The paper's 1.4 points acted on its 37.5%: on a 22% baseline the same share is 0.82
    points. An interval below 1.4 but above 0.82 excludes the points only: inconclusive."""
    converged = results_with({"baseline": [0.21, 0.22, 0.23], "no_lrn": [0.212, 0.225, 0.238]},
                             data={"dataset": "imagenette", "eval_examples": 3925})
    (tmp_path / "imagenette128_converged").mkdir()
    (tmp_path / "imagenette128_converged" / "results.json").write_text(json.dumps(converged))
    lrn = next(j for j in claims.judge(tmp_path)
               if j.claim.text.startswith("LRN lowers ImageNet"))
    assert lrn.relative_effect == pytest.approx(1.4 * 22.0 / 37.5)
    assert lrn.contrast.high < 1.4 and lrn.contrast.high > lrn.relative_effect  # the case
    assert lrn.cells.verdict == "inconclusive"
    assert lrn.cells.by_size == ("points (+1.4): paper's effect excluded; relative (+0.82): "
                                 "inconclusive")
    row = next(line for line in claims_tables.table(tmp_path).splitlines()
               if "LRN lowers ImageNet" in line)
    assert "| +0.82 (1.4 of the paper's 37.5% is 3.7% of the error; the baseline's here: " \
           "22.00%) |" in row
    # where both are excluded, the verdict says so
    assert claims.verdict(lrn.contrast, min(0.5, 1.4)) == "inconclusive"
    narrow = dataclasses.replace(lrn.contrast, high=0.5)
    assert claims.verdict(narrow, min(1.4, lrn.relative_effect)) == "paper's effect excluded"


def test_each_row_shows_its_other_measures_and_its_caveat(tmp_path):
    """The dropout row: validation error itself and the training images' error beside the gap,
    and what the gap measures; a top-1 row: the 10 views beside the centre crop; rows whose
    records name no commit say so."""
    converged = with_gap_and_views(
        results_with({"baseline": [0.21, 0.22, 0.23], "no_dropout": [0.212, 0.221, 0.233]},
                     data={"dataset": "imagenette", "eval_examples": 3925,
                           "train_examples": 9469}),
        {"baseline": [0.08, 0.09, 0.10], "no_dropout": [0.05, 0.06, 0.07]},
        {"baseline": [0.20, 0.21, 0.22], "no_dropout": [0.20, 0.215, 0.22]})
    converged["code"] = {"unrecorded": ["no_dropout/seed1"]}
    (tmp_path / "imagenette128_converged").mkdir()
    (tmp_path / "imagenette128_converged" / "results.json").write_text(json.dumps(converged))
    rows = {line.split(" | ")[0][2:]: line for line in claims_tables.summary(tmp_path).splitlines()}
    dropout = rows["dropout against overfitting (4.2)"]
    top1 = block_contrast(by_arm(baseline=[21.0, 22.0, 23.0], no_dropout=[21.2, 22.1, 23.3]),
                          "baseline", "no_dropout", 100 / 3925)
    fit = block_contrast(by_arm(baseline=[8.0, 9.0, 10.0], no_dropout=[5.0, 6.0, 7.0]),
                         "baseline", "no_dropout", 100 / 9469)
    assert (f"| val top-1 error %: {top1.estimate:+.2f} [{top1.low:+.2f}, {top1.high:+.2f}]; "
            f"training images: {fit.estimate:+.2f} [{fit.low:+.2f}, {fit.high:+.2f}] |") in dropout
    assert "the gap measures the training images' fit" in dropout
    assert dropout.endswith("no commit recorded |")
    assert "| 10 views: " not in rows["LRN lowers ImageNet error (3.3)"]  # no such arm here


def test_a_claim_not_run_at_convergence_says_what_its_power_would_take_there(tmp_path):
    early = results_with({"baseline": [0.37, 0.36, 0.38], "no_overlap": [0.38, 0.37, 0.39]},
                         protocol={"crop_size": 128, "num_epochs": 7, "num_steps": -1,
                                   "stop_at_train_error": 0.0})
    converged = results_with({"baseline": [0.21, 0.22, 0.23], "no_lrn": [0.214, 0.226, 0.232],
                              "one_column": [0.225, 0.232, 0.247]},
                             data={"dataset": "imagenette", "eval_examples": 3925})
    for arm in converged["arms"].values():
        for run in arm["runs"].values():
            run["wall_time_s"] = 3600.0
    for study, results in (("imagenette128_ablations", early),
                           ("imagenette128_converged", converged)):
        (tmp_path / study).mkdir()
        (tmp_path / study / "results.json").write_text(json.dumps(results))
    fit = next(j for j in claims.judge(tmp_path)
               if j.claim.text.startswith("LRN lowers ImageNet")).contrast
    seeds = block_design.seeds_for_power(fit.residual_sd, 0.4, 4, 0.8)
    relative = block_design.seeds_for_power(fit.residual_sd, 0.4 * 22.0 / 37.5, 4, 0.8)
    pooling = next(line for line in claims_tables.summary(tmp_path).splitlines()
                   if line.startswith("| overlapping pooling"))
    hours = seeds + seeds - 3   # the new arm's runs and the baseline's further ones, 1 h each
    assert (f"not run at convergence: 80% power there takes {seeds} seeds an arm (~{hours} "
            f"CPU-hours) at +0.4, {relative} seeds an arm") in pooling
    assert pooling.endswith(f"(s = {fit.residual_sd:.2f}); early training (7 epochs, error "
                            "still falling) |")
