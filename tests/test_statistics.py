"""`reversal_hf.statistics` against scipy on fixed vectors and against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from reversal_hf.statistics import FactCounts, accuracy_interval, holm, paired_test, ratio_interval, wilson_interval

CORRECT = [-3.1, -2.8, -4.0, -5.2, -3.3, -2.2, -4.8, -3.9, -2.7, -3.5]
RANDOM = [-3.3, -2.9, -4.6, -5.0, -3.9, -2.9, -5.1, -3.7, -3.4, -4.4]


def test_paired_test_is_scipy_paired_t_and_wilcoxon_with_a_t_interval() -> None:
    differences = [c - r for c, r in zip(CORRECT, RANDOM, strict=True)]
    result = paired_test(differences)
    ttest = stats.ttest_rel(CORRECT, RANDOM)
    wilcoxon = stats.wilcoxon(CORRECT, RANDOM)
    interval = ttest.confidence_interval(0.95)
    assert result["n"] == 10
    assert result["mean_difference"] == pytest.approx(np.mean(CORRECT) - np.mean(RANDOM))
    assert result["ttest_statistic"] == pytest.approx(ttest.statistic)
    assert result["ttest_pvalue"] == pytest.approx(ttest.pvalue)
    assert result["wilcoxon_statistic"] == pytest.approx(wilcoxon.statistic)
    assert result["wilcoxon_pvalue"] == pytest.approx(wilcoxon.pvalue)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((interval.low, interval.high))
    # By hand: mean ± t(0.975, 9) · sd / sqrt(10).
    d = np.array(differences)
    half = stats.t.ppf(0.975, 9) * d.std(ddof=1) / np.sqrt(10)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_paired_test_of_all_zero_differences_is_undefined_not_an_error() -> None:
    result = paired_test([0.0, 0.0, 0.0])
    assert result["mean_difference"] == 0.0
    assert result["ttest_pvalue"] is None and result["wilcoxon_pvalue"] is None
    with pytest.raises(ValueError, match="at least 2"):
        paired_test([1.0])


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [(0, 10, (0.0, 0.2775)), (5, 10, (0.2366, 0.7634)), (10, 10, (0.7225, 1.0)), (81, 263, (0.2553, 0.3662))],
)
def test_wilson_interval_known_cases(successes: int, n: int, expected: tuple[float, float]) -> None:
    """Published values (Newcombe 1998, Table I for 81/263) at z = 1.96."""
    assert wilson_interval(successes, n) == pytest.approx(expected, abs=1e-4)


def test_one_run_gets_wilson_and_all_wrong_cells_do_too() -> None:
    counts = FactCounts.from_rows(["a", "a", "b", "b", "c"], [True, False, True, True, False])
    assert (
        counts.facts == ("a", "b", "c") and counts.correct.tolist() == [1, 2, 0] and counts.total.tolist() == [2, 2, 1]
    )
    one_run = accuracy_interval(counts, n_runs=1)
    assert one_run["method"] == "wilson"
    assert (one_run["low"], one_run["high"]) == pytest.approx(wilson_interval(3, 5))
    # Three seeds all wrong: nothing for a bootstrap to resample, Wilson over the 900 pooled rows instead.
    none_right = FactCounts.from_rows([f"f{i % 30}" for i in range(900)], [False] * 900)
    interval = accuracy_interval(none_right, n_runs=3)
    assert interval["method"] == "wilson" and interval["low"] == 0.0 and 0 < interval["high"] < 0.005


def test_bootstrap_over_facts_known_cases() -> None:
    """Two facts, one always right and one always wrong (over every seed): a resample of two facts is both right
    (1/4), one of each (1/2) or both wrong (1/4), so the 95% percentile interval is [0, 1]. Facts right equally often
    give every resample the same accuracy: an interval of width 0."""
    facts, correct = ["right"] * 6 + ["wrong"] * 6, [True] * 6 + [False] * 6
    interval = accuracy_interval(FactCounts.from_rows(facts, correct), n_runs=3)
    assert interval["method"].startswith("bootstrap over facts")
    assert (interval["low"], interval["high"]) == (0.0, 1.0)
    halves = FactCounts.from_rows([f"f{i // 4}" for i in range(40)], [i % 2 == 0 for i in range(40)])
    interval = accuracy_interval(halves, n_runs=2)
    assert (interval["low"], interval["high"]) == pytest.approx((0.5, 0.5))


def test_bootstrap_keeps_a_facts_seeds_together_and_is_reproducible() -> None:
    rng = np.random.default_rng(3)
    facts = [f"f{i}" for i in range(30)] * 3  # three seeds of the same 30 facts
    correct = (rng.random(90) < np.tile(np.linspace(0.05, 0.95, 30), 3)).tolist()
    counts = FactCounts.from_rows(facts, correct)
    assert counts.total.tolist() == [3] * 30
    first, second = accuracy_interval(counts, 3), accuracy_interval(counts, 3)
    assert first == second and first["low"] < counts.accuracy < first["high"]


def test_oracle_ratio_by_hand() -> None:
    """A method right on 1 of 4 rows of every fact, the oracle on 2 of 4: the ratio is 0.5 in every resample."""
    facts = [f"f{i // 4}" for i in range(20)]
    method = FactCounts.from_rows(facts, [i % 4 == 0 for i in range(20)])
    oracle = FactCounts.from_rows(facts, [i % 4 < 2 for i in range(20)])
    assert ratio_interval(method, oracle) == pytest.approx({"ratio": 0.5, "low": 0.5, "high": 0.5})
    # 3 of 10 rows against 6 of 10 on different facts: the point ratio is 0.3 / 0.6, the interval around it.
    mixed = FactCounts.from_rows(list("abcdefghij"), [True, True, True] + [False] * 7)
    better = FactCounts.from_rows(list("abcdefghij"), [True] * 6 + [False] * 4)
    result = ratio_interval(mixed, better)
    assert result["ratio"] == pytest.approx(0.5) and result["low"] < 0.5 < result["high"]
    assert ratio_interval(better, FactCounts.from_rows(list("abcdefghij"), [False] * 10)) is None
    with pytest.raises(ValueError, match="same facts"):
        ratio_interval(method, better)


def test_counts_in_a_given_fact_order_leave_out_other_facts() -> None:
    counts = FactCounts.from_rows(["b", "a", "z"], [True, False, True], order=["a", "b", "c"])
    assert counts.facts == ("a", "b", "c") and counts.correct.tolist() == [0, 1, 0]
    assert counts.total.tolist() == [1, 1, 0]


@pytest.mark.parametrize(
    ("pvalues", "adjusted"),
    [
        # Sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> kept monotone: 0.06.
        ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),
        ([0.2, None, 0.6], [0.4, None, 0.6]),  # a missing test is not in the family
        ([0.5, 0.9], [1.0, 1.0]),  # capped at 1, then monotone
        ([], []),
    ],
)
def test_holm_by_hand(pvalues: list[float | None], adjusted: list[float | None]) -> None:
    assert holm(pvalues) == pytest.approx(adjusted)
