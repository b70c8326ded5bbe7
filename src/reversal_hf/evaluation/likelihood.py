"""Experiment 1's "increased likelihood" test (Appendix B.5), for the forward questions (`exp1`) and the reverse-mode
ones (`reverse_mode`): the correct completion's log-prob against every other fact's under the same template."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import pandas as pd

from reversal_hf.evaluation.backends import Runner
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.metrics import likelihood_test


def _normalized(text: str) -> str:
    return text.strip().casefold()


def other_facts_completions(frame: pd.DataFrame, pool: pd.DataFrame, key: str) -> list[list[str]]:
    """For each row, every other fact's completion under the row's template in `pool` (sorted; never the row's own).

    Why every other fact and not one seeded draw (the paper's design, and ours before): with one random completion
    per prompt the test compares the correct completion against whichever completions the draw happened to pick, and
    a different draw can turn the result; scoring all the others removes the draw altogether, and with 30 facts per
    template it is 29 completions per prompt, more than K = 20 draws would give. The cost is 29 short sequences per
    held-out prompt (8,700 per split of 300 prompts), batched; prompts are shorter than `PREFIX_CACHE_MIN_TOKENS`, so
    batching, not the prefix cache, is what keeps it affordable (a few minutes for SmolLM2-135M on 2 CPU cores).
    Within the template, because the paper's descriptions were bent by an LLM to fit each template: another template's
    completion would be less likely for its grammar alone, and the fact is left as the only difference.
    """
    by_template: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for name, completion, template in zip(pool["name"], pool["completion"], pool["template_id"], strict=True):
        by_template[template].add((name, completion))
    others = []
    for name, completion, template in zip(frame["name"], frame["completion"], frame["template_id"], strict=True):
        row = sorted({c for n, c in by_template[template] if n != name and _normalized(c) != _normalized(completion)})
        if not row:
            raise EvaluationError(f"{key}: no other fact under template {template} to score as a random completion")
        others.append(row)
    return others


def with_scores(
    frame: pd.DataFrame,
    correct: list[str],
    random_completions: list[list[str]],
    correct_scores: Sequence[tuple[float, int]],
    random_scores: Sequence[tuple[float, int]],
) -> pd.DataFrame:
    """The frame with each prompt's correct and random completions and their (summed log-prob, token count) scores
    (`random_scores` flat, row after row): sums and per-token means, each prompt's randoms averaged."""
    scores = iter(random_scores)
    per_row = [[next(scores) for _ in completions] for completions in random_completions]
    return frame.assign(
        correct_completion=correct,
        random_completions=random_completions,
        n_random=[len(completions) for completions in random_completions],
        random_is_correct=[
            any(_normalized(r) == _normalized(c) for r in randoms)
            for randoms, c in zip(random_completions, correct, strict=True)
        ],
        correct_logprob=[total for total, _ in correct_scores],
        correct_tokens=[count for _, count in correct_scores],
        random_logprobs=[[total for total, _ in row] for row in per_row],
        random_tokens=[[count for _, count in row] for row in per_row],
        random_logprob=[sum(total for total, _ in row) / len(row) for row in per_row],
        correct_logprob_per_token=[total / count for total, count in correct_scores],
        random_logprob_per_token=[sum(total / count for total, count in row) / len(row) for row in per_row],
    )


def with_logprobs(
    frame: pd.DataFrame, correct: list[str], random_completions: list[list[str]], runner: Runner
) -> pd.DataFrame:
    """`with_scores`, every completion scored by `runner` in one call (so that it batches them all)."""
    prompts = frame["prompt"].tolist()
    random_prompts = [p for p, completions in zip(prompts, random_completions, strict=True) for _ in completions]
    scores = runner.scores(prompts + random_prompts, correct + [c for row in random_completions for c in row])
    return with_scores(frame, correct, random_completions, scores[: len(prompts)], scores[len(prompts) :])


def per_fact_test(frame: pd.DataFrame) -> dict[str, Any]:
    """Average each fact's held-out prompts first (Appendix B.5), then compare correct against random: on summed
    log-probs (the paper's), and in `per_token` on per-token means (a longer completion is less likely for its length
    alone). `facts` names the facts in the order of `differences`, so seeds can be pooled from metrics files."""
    columns = ["correct_logprob", "random_logprob", "correct_logprob_per_token", "random_logprob_per_token"]
    per_fact = frame.groupby("name", sort=True)[columns].mean()
    n_random = int(frame["n_random"].min())
    per_token = likelihood_test(
        per_fact["correct_logprob_per_token"].tolist(), per_fact["random_logprob_per_token"].tolist(), n_random
    )
    summed = likelihood_test(per_fact["correct_logprob"].tolist(), per_fact["random_logprob"].tolist(), n_random)
    return {**summed, "facts": per_fact.index.tolist(), "per_token": per_token}
