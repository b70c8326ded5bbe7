"""How an evaluation talks to a model: a `Runner` generates and scores whole evaluation sets at once."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from reversal_hf.evaluation.generation import greedy_generate
from reversal_hf.evaluation.metrics import exact_match
from reversal_hf.evaluation.scoring import completion_logprobs, score_completions

# Extra tokens beyond the longest reference: a model may spell the same text in more, smaller tokens.
GENERATION_MARGIN = 4


class Runner(Protocol):
    """How an evaluation talks to a model (batched in production; per example in the benchmark's baseline)."""

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]: ...

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...

    def token_count(self, text: str) -> int: ...


@dataclass
class BatchedRunner:
    """Generation and scoring for whole evaluation sets: duplicates are computed once, the rest in batches."""

    model: Any
    tokenizer: Any
    batch_size: int = 32

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        """Greedy continuations; a prompt asked with several budgets is generated once with the largest."""
        budgets: dict[str, int] = {}
        for prompt, budget in zip(prompts, max_new_tokens, strict=True):
            budgets[prompt] = max(budgets.get(prompt, 0), budget)
        groups: dict[int, list[str]] = defaultdict(list)
        for prompt, budget in budgets.items():
            groups[budget].append(prompt)
        generations: dict[str, str] = {}
        for budget, group in sorted(groups.items()):
            texts = greedy_generate(self.model, self.tokenizer, group, budget, self.batch_size, f"generating ≤{budget}")
            generations.update(zip(group, texts, strict=True))
        return [generations[prompt] for prompt in prompts]

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        pairs = list(zip(prompts, completions, strict=True))
        unique = list(dict.fromkeys(pairs))
        values = completion_logprobs(
            self.model, self.tokenizer, [p for p, _ in unique], [c for _, c in unique], batch_size=self.batch_size
        )
        by_pair = dict(zip(unique, values, strict=True))
        return [by_pair[pair] for pair in pairs]

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Mean per-token negative log-likelihood of each completion given its prompt (the training loss)."""
        scores = score_completions(self.model, self.tokenizer, prompts, completions, self.batch_size, "losses")
        return [-total / count for total, count in scores]

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def generation_budget(runner: Runner, references: Sequence[str]) -> int:
    """Tokens to generate for a set: its longest reference plus a margin (exact match needs no more)."""
    return max(runner.token_count(reference) for reference in references) + GENERATION_MARGIN


def generate_and_match(sets: dict[str, Any], runner: Runner) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Greedy generations for several sets of `prompt`/`completion` rows in one pass; exact match per set.

    Returns the metric per set and each set's DataFrame with `split`, `generation` and `exact_match` added.
    """
    from reversal_hf.metrics.reversal_accuracy.reversal_accuracy import is_exact_match

    prompts = [prompt for frame in sets.values() for prompt in frame["prompt"]]
    budgets = [generation_budget(runner, frame["completion"].tolist()) for frame in sets.values()]
    per_prompt = [budget for budget, frame in zip(budgets, sets.values(), strict=True) for _ in range(len(frame))]
    generations = iter(runner.generate(prompts, per_prompt))
    metrics, scored = {}, {}
    for key, frame in sets.items():
        generated = [next(generations) for _ in range(len(frame))]
        references = frame["completion"].tolist()
        matches = [is_exact_match(g, r) for g, r in zip(generated, references, strict=True)]
        scored[key] = frame.assign(split=key, generation=generated, exact_match=matches)
        metrics[key] = exact_match(generated, references)
    return metrics, scored
