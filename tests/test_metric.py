"""The `reversal_accuracy` evaluate module: the paper's matching rule, scipy agreement, bad input, Space layout."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import evaluate
import numpy as np
import pytest
from scipy import stats

from reversal_hf.metrics import REVERSAL_ACCURACY

OUTPUTS = ("mean_correct_logprob", "mean_random_logprob", "ttest_statistic", "ttest_pvalue", "ks_statistic",
           "ks_pvalue", "significant", "n")  # fmt: skip
# Added for pooling across seeds (issue 18); the outputs above are kept, so older metrics files still read.
POOLING_OUTPUTS = ("n_random_per_fact", "mean_difference", "difference_ci_low", "difference_ci_high",
                   "wilcoxon_statistic", "wilcoxon_pvalue", "differences")  # fmt: skip


@pytest.fixture(scope="module")
def exact_match() -> evaluate.EvaluationModule:
    return evaluate.load(REVERSAL_ACCURACY)


@pytest.fixture(scope="module")
def likelihood() -> evaluate.EvaluationModule:
    return evaluate.load(REVERSAL_ACCURACY, "likelihood")


def test_path_constant_points_at_the_metric_folder() -> None:
    folder = Path(REVERSAL_ACCURACY)
    assert folder.is_absolute()
    assert {"reversal_accuracy.py", "README.md", "app.py", "requirements.txt"} <= {p.name for p in folder.iterdir()}


@pytest.mark.parametrize(
    ("prediction", "reference", "correct"),
    [
        (" Daphne Barrington, the director", " Daphne Barrington", True),  # starts with the target
        ("daphne barrington", " Daphne Barrington", True),  # case-insensitive, stripped
        ("\n  DAPHNE BARRINGTON.  ", "Daphne Barrington ", True),
        (" Daphne", " Daphne Barrington", False),  # a prefix of the target is not enough
        (" The person is Daphne Barrington", " Daphne Barrington", False),  # must start with it
        ("", " Daphne", False),
    ],
)
def test_exact_match_rule(exact_match, prediction: str, reference: str, correct: bool) -> None:
    assert exact_match.compute(predictions=[prediction], references=[reference]) == {"accuracy": float(correct), "n": 1}


def test_exact_match_accuracy_and_case_sensitive_option(exact_match) -> None:
    predictions = [" Uriah Hawthorne is", "uriah hawthorne", " Mason", " Someone else"]
    references = [" Uriah Hawthorne", " Uriah Hawthorne", " Mason Caldwell", " Mason Caldwell"]
    assert exact_match.compute(predictions=predictions, references=references) == {"accuracy": 0.5, "n": 4}
    result = exact_match.compute(predictions=predictions, references=references, case_sensitive=True)
    assert result == {"accuracy": 0.25, "n": 4}


def test_likelihood_matches_scipy(likelihood) -> None:
    rng = np.random.default_rng(0)
    random = rng.normal(-12.0, 2.0, size=30)
    correct = random + rng.normal(0.8, 1.0, size=30)
    result = likelihood.compute(correct_logprobs=correct.tolist(), random_logprobs=random.tolist())
    assert set(result) == {*OUTPUTS, *POOLING_OUTPUTS}
    ttest, ks = stats.ttest_rel(correct, random), stats.ks_2samp(correct, random)
    assert result["ttest_statistic"] == pytest.approx(ttest.statistic)
    assert result["ttest_pvalue"] == pytest.approx(ttest.pvalue)
    assert result["ks_statistic"] == pytest.approx(ks.statistic)
    assert result["ks_pvalue"] == pytest.approx(ks.pvalue)
    assert result["mean_correct_logprob"] == pytest.approx(correct.mean())
    assert result["mean_random_logprob"] == pytest.approx(random.mean())
    assert result["n"] == 30
    assert result["significant"] is bool(ttest.pvalue < 0.05 and correct.mean() > random.mean())
    wilcoxon, interval = stats.wilcoxon(correct, random), ttest.confidence_interval(0.95)
    assert result["differences"] == pytest.approx((correct - random).tolist())
    assert result["mean_difference"] == pytest.approx((correct - random).mean())
    assert (result["difference_ci_low"], result["difference_ci_high"]) == pytest.approx((interval.low, interval.high))
    assert result["wilcoxon_statistic"] == pytest.approx(wilcoxon.statistic)
    assert result["wilcoxon_pvalue"] == pytest.approx(wilcoxon.pvalue)
    assert result["n_random_per_fact"] == 1


def test_likelihood_reports_how_many_random_completions_each_value_averages(likelihood) -> None:
    result = likelihood.compute(
        correct_logprobs=[-1.0, -2.0, -2.5], random_logprobs=[-3.0, -2.5, -4.0], n_random_per_fact=29
    )
    assert result["n_random_per_fact"] == 29
    with pytest.raises(ValueError, match="n_random_per_fact"):
        likelihood.compute(correct_logprobs=[-1.0, -2.0], random_logprobs=[-3.0, -2.5], n_random_per_fact=0)


def test_identical_inputs_leave_the_tests_undefined_and_not_significant(likelihood) -> None:
    result = likelihood.compute(correct_logprobs=[-1.0, -2.0, -3.0], random_logprobs=[-1.0, -2.0, -3.0])
    assert result["ttest_pvalue"] is None and result["wilcoxon_pvalue"] is None and result["significant"] is False


def test_significant_needs_higher_correct_mean_and_small_p(likelihood) -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(-10.0, 1.0, size=20).tolist()
    higher = [value + 1.0 + 0.1 * rng.standard_normal() for value in base]
    assert likelihood.compute(correct_logprobs=higher, random_logprobs=base)["significant"] is True
    assert likelihood.compute(correct_logprobs=base, random_logprobs=higher)["significant"] is False  # lower, tiny p
    result = likelihood.compute(correct_logprobs=higher, random_logprobs=base, alpha=1e-300)
    assert result["significant"] is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"correct_logprobs": [-1.0, -2.0], "random_logprobs": [-1.0]}, "Mismatch"),
        ({"correct_logprobs": [-1.0, math.nan], "random_logprobs": [-1.0, -2.0]}, "correct_logprobs"),
        ({"correct_logprobs": [-1.0, -2.0], "random_logprobs": [-math.inf, -2.0]}, "random_logprobs"),
        ({"correct_logprobs": [], "random_logprobs": []}, "correct_logprobs"),
        ({"correct_logprobs": [-1.0], "random_logprobs": [-2.0]}, "at least 2"),
        ({"correct_logprobs": [-1.0, -2.0], "random_logprobs": [-2.0, -3.0], "alpha": 1.5}, "alpha"),
    ],
)
def test_likelihood_bad_input(likelihood, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        likelihood.compute(**kwargs)


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [([], [], "references is empty"), (["a"], ["  "], "blank"), (["a", "b"], ["a"], "Mismatch")],
)
def test_exact_match_bad_input(exact_match, predictions, references, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        exact_match.compute(predictions=predictions, references=references)


def test_unknown_configuration_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown configuration 'f1'"):
        evaluate.load(REVERSAL_ACCURACY, "f1")


def test_loads_from_a_fresh_copy_of_the_space_layout(tmp_path: Path) -> None:
    """A Hub metric Space is this folder; `evaluate.load` of a copy works from anywhere (its requirements.txt installs
    reversal-hf, whose `statistics` module the paired tests share with the reports)."""
    copy = shutil.copytree(REVERSAL_ACCURACY, tmp_path / "reversal_accuracy")
    metric = evaluate.load(str(copy), "likelihood")
    assert metric.compute(correct_logprobs=[-1.0, -2.0, -2.5], random_logprobs=[-3.0, -2.5, -4.0])["n"] == 3


def test_card_documents_inputs_outputs_and_citation(exact_match, likelihood) -> None:
    card = (Path(REVERSAL_ACCURACY) / "README.md").read_text()
    front_matter = card.split("---")[1]
    assert re.search(r"^app_file: app\.py$", front_matter, re.MULTILINE)
    assert re.search(r"^sdk: gradio$", front_matter, re.MULTILINE)
    for name in ("predictions", "references", "case_sensitive", "correct_logprobs", "random_logprobs", "alpha",
                 "n_random_per_fact", "accuracy", *OUTPUTS, *POOLING_OUTPUTS):  # fmt: skip
        assert f"`{name}`" in card or f"**{name}**" in card, name
    assert "berglund2024reversal" in card and "two-sided" in card
    assert exact_match.citation == likelihood.citation and "berglund2024reversal" in exact_match.citation
    assert list(likelihood.features) == ["correct_logprobs", "random_logprobs"]
