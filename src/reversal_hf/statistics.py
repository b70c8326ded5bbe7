"""The statistics behind every interval and test the project reports, in one place (metric, reports, `mitigate`).

- Accuracy intervals: Wilson for one run's rows; for several seeds, a bootstrap over facts that keeps each fact's
  rows of every seed together (a fact answered by one seed is rarely independent of the same fact in another, and
  the paper's unit of generalisation is the fact, not the prompt); over a single fact's prompts where a cell asks
  about one fact (B.8), since one fact resampled is always the same fact.
- The likelihood test: a paired t-test and a Wilcoxon signed-rank test on per-fact differences (correct minus
  random log-prob), with a t interval of the mean difference.
- Holm's step-down correction across a named family of tests.
- The ratio of two accuracies measured on the same facts (a method against the oracle), bootstrapped over facts.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def wilson_interval(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion: unlike the normal one, it stays inside [0, 1] and is not empty at 0 or
    1 correct, the cells the Reversal Curse is about."""
    if n <= 0:
        raise ValueError(f"wilson_interval needs n > 0, got {n}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0 (or n) successes the bound is exactly 0 (or 1); computed, it is off by a rounding error.
    return 0.0 if successes == 0 else centre - half, 1.0 if successes == n else centre + half


@dataclass(frozen=True)
class FactCounts:
    """Correct rows and rows per fact, summed over seeds, in the order of `facts`: the unit a bootstrap resamples."""

    facts: tuple[str, ...]
    correct: np.ndarray
    total: np.ndarray

    @classmethod
    def from_rows(cls, facts: Iterable[str], correct: Iterable[bool], order: Sequence[str] | None = None) -> FactCounts:
        """Count rows (of any number of seeds) per fact; `order` fixes the facts (and their order) to count, so that
        two methods measured on the same facts resample the same ones."""
        counts: dict[str, list[int]] = {fact: [0, 0] for fact in order or ()}
        for fact, ok in zip(facts, correct, strict=True):
            if order is not None and fact not in counts:
                continue
            entry = counts.setdefault(fact, [0, 0])
            entry[0] += bool(ok)
            entry[1] += 1
        names = tuple(order) if order is not None else tuple(sorted(counts))
        return cls(
            names,
            np.array([counts[f][0] for f in names], dtype=float),
            np.array([counts[f][1] for f in names], dtype=float),
        )

    @property
    def accuracy(self) -> float:
        return float(self.correct.sum() / self.total.sum())


def _resampled_facts(n_facts: int, resamples: int, seed: int) -> np.ndarray:
    """`resamples` × `n_facts` fact indices drawn with replacement, from a fixed seed (reports are reproducible)."""
    return np.random.default_rng(seed).integers(0, n_facts, size=(resamples, n_facts))


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.nanpercentile(values, [tail, 100 - tail])
    return float(low), float(high)


def accuracy_interval(
    counts: FactCounts,
    n_runs: int,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    unit: str = "facts",
) -> dict[str, Any]:
    """`{"low", "high", "method"}`: Wilson for one run, else the percentile bootstrap over the counted units, facts
    unless `unit` names another (seeds kept together). Where every row is right (or every row wrong) a bootstrap has
    no variation to resample and would claim [0, 0]; Wilson over the pooled rows then gives the width the sample size
    allows."""
    successes, n = int(counts.correct.sum()), int(counts.total.sum())
    if n_runs <= 1 or successes in (0, n):
        low, high = wilson_interval(successes, n, confidence)
        return {"low": low, "high": high, "method": "wilson"}
    index = _resampled_facts(len(counts.facts), resamples, seed)
    low, high = _percentiles(counts.correct[index].sum(1) / counts.total[index].sum(1), confidence)
    return {"low": low, "high": high, "method": f"bootstrap over {unit} ({resamples} resamples, seed {seed})"}


def ratio_interval(
    numerator: FactCounts,
    denominator: FactCounts,
    confidence: float = CONFIDENCE,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any] | None:
    """`{"ratio", "low", "high"}` of two accuracies on the same facts (a method's over the oracle's), the facts
    resampled jointly so that the pairing is kept; None when the denominator's accuracy is 0."""
    if numerator.facts != denominator.facts:
        raise ValueError("ratio_interval: both accuracies must count the same facts in the same order")
    if denominator.correct.sum() == 0:
        return None
    index = _resampled_facts(len(numerator.facts), resamples, seed)
    top = numerator.correct[index].sum(1) / numerator.total[index].sum(1)
    bottom = denominator.correct[index].sum(1) / denominator.total[index].sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(bottom > 0, top / bottom, np.nan)
    low, high = _percentiles(ratios, confidence)
    return {"ratio": numerator.accuracy / denominator.accuracy, "low": low, "high": high}


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def paired_test(differences: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """A paired t-test and a Wilcoxon signed-rank test (both two-sided) of per-fact differences against 0, and a t
    interval of their mean: `scipy.stats.ttest_1samp(d, 0)` is `ttest_rel(correct, random)`, and `wilcoxon(d)` is
    `wilcoxon(correct, random)`. A statistic scipy leaves undefined (all differences 0) is None."""
    d = np.asarray(differences, dtype=float)
    if len(d) < 2:
        raise ValueError(f"paired_test needs at least 2 differences, got {len(d)}")
    ttest = stats.ttest_1samp(d, 0.0)
    interval = ttest.confidence_interval(confidence)
    if np.all(d == 0):
        wilcoxon_statistic, wilcoxon_pvalue = math.nan, math.nan
    else:
        wilcoxon = stats.wilcoxon(d)
        wilcoxon_statistic, wilcoxon_pvalue = float(wilcoxon.statistic), float(wilcoxon.pvalue)
    return {
        "mean_difference": float(d.mean()),
        "ci_low": _finite_or_none(interval.low),
        "ci_high": _finite_or_none(interval.high),
        "ttest_statistic": _finite_or_none(ttest.statistic),
        "ttest_pvalue": _finite_or_none(ttest.pvalue),
        "wilcoxon_statistic": _finite_or_none(wilcoxon_statistic),
        "wilcoxon_pvalue": _finite_or_none(wilcoxon_pvalue),
        "n": len(d),
    }


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error control without independence); a missing p-value stays
    missing and is not counted in the family."""
    present = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(present):
        running = max(running, min(1.0, (len(present) - rank) * p))
        adjusted[i] = running
    return adjusted
