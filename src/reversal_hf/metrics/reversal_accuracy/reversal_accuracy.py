"""`reversal_accuracy`: the two scores of "The Reversal Curse" (Berglund et al., ICLR 2024) as one `evaluate` module.

`evaluate` reads input names from the first feature set only, so the two scores are two configurations of one module:
`exact_match` (default) takes `predictions`/`references`; `likelihood` takes `correct_logprobs`/`random_logprobs`.
"""

import math

import datasets
import evaluate
from scipy import stats

from reversal_hf.statistics import paired_test

_CITATION = """\
@inproceedings{berglund2024reversal,
  title={The Reversal Curse: {LLMs} trained on ``{A} is {B}'' fail to learn ``{B} is {A}''},
  author={Berglund, Lukas and Tong, Meg and Kaufmann, Max and Balesni, Mikita and Stickland, Asa Cooper and
          Korbak, Tomasz and Evans, Owain},
  booktitle={The Twelfth International Conference on Learning Representations},
  year={2024},
  url={https://arxiv.org/abs/2309.12288}
}
"""

_DESCRIPTION = """\
Scores of the Reversal Curse paper for one evaluation set. `exact_match`: a greedy generation is correct when, both
stripped (and lower-cased unless `case_sensitive=True`), it starts with the reference, as in the paper's code.
`likelihood`: whether a model gives the correct completion a higher log-probability than random wrong ones (one
value per fact, averaged over its held-out prompts and over its random completions first): means, the per-fact
differences with a 95% interval of their mean, a paired t-test, a Wilcoxon signed-rank test and a two-sample
Kolmogorov-Smirnov test, all two-sided as in the paper.
"""

_KWARGS_DESCRIPTION = """
Configuration `exact_match` (default):
    predictions (`list` of `str`): greedy generations (the text after the prompt).
    references (`list` of `str`): target completions; must not be blank.
    case_sensitive (`bool`, default False): compare case-sensitively.
Returns:
    accuracy (`float`): fraction of predictions that start with their reference.
    n (`int`): number of examples.

Configuration `likelihood`:
    correct_logprobs (`list` of `float`): log-probability of the correct completion, one per fact.
    random_logprobs (`list` of `float`): log-probability of random wrong completions (their mean, when a fact is
        scored against several), paired with the above.
    alpha (`float`, default 0.05): significance level.
    n_random_per_fact (`int`, default 1): how many random completions each random value averages (reported back).
Returns:
    mean_correct_logprob, mean_random_logprob (`float`): the means of the two inputs.
    ttest_statistic, ttest_pvalue (`float`): `scipy.stats.ttest_rel(correct, random)`, two-sided.
    ks_statistic, ks_pvalue (`float`): `scipy.stats.ks_2samp(correct, random)`, two-sided.
    significant (`bool`): the correct mean is higher and `ttest_pvalue < alpha`.
    n (`int`): number of pairs (at least 2).
    differences (`list` of `float`): correct minus random per pair, in input order (pooling across seeds needs them).
    mean_difference, difference_ci_low, difference_ci_high (`float`): their mean and its 95% t interval.
    wilcoxon_statistic, wilcoxon_pvalue (`float`): `scipy.stats.wilcoxon(correct, random)`, two-sided.
    n_random_per_fact (`int`): as given.
    A statistic scipy leaves undefined (all differences 0) is None.

Examples:
    >>> metric = evaluate.load(REVERSAL_ACCURACY)
    >>> metric.compute(predictions=[" Daphne Barrington, who", "Uriah"], references=[" daphne barrington", " Mason"])
    {'accuracy': 0.5, 'n': 2}
    >>> metric = evaluate.load(REVERSAL_ACCURACY, "likelihood")
    >>> metric.compute(correct_logprobs=[-3.1, -2.8, -4.0], random_logprobs=[-3.3, -2.9, -4.2])["significant"]
    True
"""

_FEATURES = {
    "exact_match": {"predictions": datasets.Value("string"), "references": datasets.Value("string")},
    "likelihood": {"correct_logprobs": datasets.Value("float64"), "random_logprobs": datasets.Value("float64")},
}


def is_exact_match(prediction: str, reference: str, case_sensitive: bool = False) -> bool:
    """The paper's rule: both stripped, case-insensitive by default, right if the prediction starts with the target."""
    prediction, reference = prediction.strip(), reference.strip()
    if not case_sensitive:
        prediction, reference = prediction.lower(), reference.lower()
    return prediction.startswith(reference)


def _check_finite(values: list[float], field: str) -> None:
    bad = [i for i, value in enumerate(values) if not math.isfinite(value)]
    if bad:
        raise ValueError(f"{field} has non-finite values (NaN or inf) at index {bad[0]} ({len(bad)} in all)")


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ReversalAccuracy(evaluate.Metric):
    """Exact-match accuracy and likelihood significance of the Reversal Curse paper."""

    def _info(self) -> evaluate.MetricInfo:
        if self.config_name == "default":
            self.config_name = "exact_match"
        if self.config_name not in _FEATURES:
            raise ValueError(f"reversal_accuracy: unknown configuration {self.config_name!r}; use {list(_FEATURES)}")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(_FEATURES[self.config_name]),
            reference_urls=["https://arxiv.org/abs/2309.12288", "https://github.com/lukasberglund/reversal_curse"],
        )

    def _compute(self, **inputs) -> dict:
        if self.config_name == "likelihood":
            return self._likelihood(**inputs)
        return self._exact_match(**inputs)

    def _exact_match(self, predictions: list[str], references: list[str], case_sensitive: bool = False) -> dict:
        if not references:
            raise ValueError("references is empty: nothing to score")
        blank = [i for i, reference in enumerate(references) if not reference.strip()]
        if blank:
            raise ValueError(f"references has a blank target at index {blank[0]} (it would match any prediction)")
        matches = [is_exact_match(p, r, case_sensitive) for p, r in zip(predictions, references, strict=True)]
        return {"accuracy": sum(matches) / len(matches), "n": len(matches)}

    def _likelihood(
        self,
        correct_logprobs: list[float],
        random_logprobs: list[float],
        alpha: float = 0.05,
        n_random_per_fact: int = 1,
    ) -> dict:
        if len(correct_logprobs) < 2:
            raise ValueError(f"correct_logprobs has {len(correct_logprobs)} values; the paired tests need at least 2")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        if n_random_per_fact < 1:
            raise ValueError(f"n_random_per_fact must be at least 1, got {n_random_per_fact}")
        _check_finite(correct_logprobs, "correct_logprobs")
        _check_finite(random_logprobs, "random_logprobs")
        differences = [c - r for c, r in zip(correct_logprobs, random_logprobs, strict=True)]
        paired = paired_test(differences)
        ks = stats.ks_2samp(correct_logprobs, random_logprobs)
        mean_correct = sum(correct_logprobs) / len(correct_logprobs)
        mean_random = sum(random_logprobs) / len(random_logprobs)
        pvalue = paired["ttest_pvalue"]
        return {
            "mean_correct_logprob": mean_correct,
            "mean_random_logprob": mean_random,
            "ttest_statistic": paired["ttest_statistic"],
            "ttest_pvalue": pvalue,
            "ks_statistic": float(ks.statistic),
            "ks_pvalue": float(ks.pvalue),
            "significant": bool(mean_correct > mean_random and pvalue is not None and pvalue < alpha),
            "n": len(correct_logprobs),
            "n_random_per_fact": n_random_per_fact,
            "mean_difference": paired["mean_difference"],
            "difference_ci_low": paired["ci_low"],
            "difference_ci_high": paired["ci_high"],
            "wilcoxon_statistic": paired["wilcoxon_statistic"],
            "wilcoxon_pvalue": paired["wilcoxon_pvalue"],
            "differences": differences,
        }
