"""The paper's scores through the `reversal_accuracy` metric module: exact match and the likelihood test."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from reversal_hf.metrics import REVERSAL_ACCURACY


@cache
def _metric(config_name: str) -> Any:
    import evaluate

    return evaluate.load(REVERSAL_ACCURACY, config_name)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """`{"accuracy", "n"}` by the paper's rule (the `reversal_accuracy` metric)."""
    return _metric("exact_match").compute(predictions=list(predictions), references=list(references))


def likelihood_test(
    correct: Sequence[float], random: Sequence[float], n_random_per_fact: int = 1, alpha: float = 0.05
) -> dict[str, Any]:
    """Means, per-fact differences with a 95% interval, paired t, Wilcoxon and KS tests of per-fact log-probs (the
    `reversal_accuracy` metric, `likelihood`); `random` holds each fact's mean over `n_random_per_fact` completions."""
    return _metric("likelihood").compute(
        correct_logprobs=list(correct), random_logprobs=list(random), n_random_per_fact=n_random_per_fact, alpha=alpha
    )
