"""How an evaluation reaches a model: a `Runner` generates, scores and samples whole evaluation sets at once.

Three back-ends: `BatchedRunner` (a local model, in batches), `mlm_u.MaskedLMRunner` (an MLM-U masked LM) and
`openai_runner.OpenAIRunner` (a model at an OpenAI-compatible endpoint); `make_runner` picks one by the arguments'
`backend`, so each evaluator is written once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from reversal_hf import run_folder
from reversal_hf.evaluation.batching import largest_budgets, once_each
from reversal_hf.evaluation.errors import EvaluationError, SamplingNeedsAnEndpointError
from reversal_hf.evaluation.generation import greedy_generate
from reversal_hf.evaluation.loading import load_model_and_tokenizer
from reversal_hf.evaluation.metrics import exact_match
from reversal_hf.evaluation.mlm_u import MaskedLMRunner
from reversal_hf.evaluation.openai_runner import OpenAIRunner
from reversal_hf.evaluation.scoring import score_completions
from reversal_hf.metrics.reversal_accuracy.reversal_accuracy import is_exact_match
from reversal_hf.models import resolve_model
from reversal_hf.openai_api import ResponseCache, is_completion_model, make_client

# Extra tokens beyond the longest reference: a model may spell the same text in more, smaller tokens.
GENERATION_MARGIN = 4


class Runner(Protocol):
    """How an evaluation talks to a model (batched in production; per example in the benchmark's baseline)."""

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]: ...

    def scores(
        self, prompts: Sequence[str], completions: Sequence[str], deduplicate: bool = True
    ) -> list[tuple[float, int]]:
        """(summed log-prob, token count) of each completion given its prompt (the count gives per-token means);
        `LogprobsUnavailableError` where the model has none. `deduplicate`: each distinct pair scored once; False
        keeps every pair in the batch it would have had (Exp 2's committed scores: batches of another make-up move
        the last digits, 14 of 200 SmolLM2 scores by up to 2e-5)."""
        ...

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...

    def token_count(self, text: str) -> int: ...

    def sample(self, conversations: Sequence[list[dict[str, str]]], samples: int, **sampling: Any) -> list[list[str]]:
        """`samples` sampled chat answers to each conversation (`sampling`: the request's temperature, max_tokens,
        extra_body); a model at an endpoint only."""
        ...


class RunnerArguments(Protocol):
    """What `make_runner` reads of an evaluator's arguments (`EvaluatorArguments`, `Exp2Arguments`)."""

    backend: str
    model: str
    batch_size: int
    output: Path
    base_url: str | None
    concurrency: int
    max_retries: int
    timeout: float


@dataclass
class BatchedRunner:
    """Generation and scoring for whole evaluation sets: duplicates are computed once, the rest in batches."""

    model: Any
    tokenizer: Any
    batch_size: int = 32

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        """Greedy continuations; a prompt asked with several budgets is generated once with the largest."""
        groups: dict[int, list[str]] = defaultdict(list)
        for prompt, budget in largest_budgets(prompts, max_new_tokens).items():
            groups[budget].append(prompt)
        generations: dict[str, str] = {}
        for budget, group in sorted(groups.items()):
            texts = greedy_generate(self.model, self.tokenizer, group, budget, self.batch_size, f"generating ≤{budget}")
            generations.update(zip(group, texts, strict=True))
        return [generations[prompt] for prompt in prompts]

    def scores(
        self, prompts: Sequence[str], completions: Sequence[str], deduplicate: bool = True
    ) -> list[tuple[float, int]]:
        def score(pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
            return score_completions(
                self.model, self.tokenizer, [p for p, _ in pairs], [c for _, c in pairs], self.batch_size, "log-probs"
            )

        pairs = list(zip(prompts, completions, strict=True))
        return once_each(pairs, score) if deduplicate else score(pairs)

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Mean per-token negative log-likelihood of each completion given its prompt (the training loss)."""
        scores = score_completions(self.model, self.tokenizer, prompts, completions, self.batch_size, "losses")
        return [-total / count for total, count in scores]

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sample(self, conversations: Sequence[list[dict[str, str]]], samples: int, **sampling: Any) -> list[list[str]]:
        raise SamplingNeedsAnEndpointError("a local model")


def make_runner(
    args: RunnerArguments, run_info: dict[str, Any] | None, experiment: str, cache: Path | None = None
) -> Runner:
    """The evaluated model as a `Runner`: a local model (`hf`; a registered name is prepared first), a local MLM-U
    masked LM (`mlm_u`), or a model at an OpenAI-compatible endpoint (`openai`): the model name given, or an OpenAI
    run folder's `fine_tuned_model`. The endpoint's answers are cached in `cache` (default
    `<output>/eval/<experiment>_openai_cache.jsonl`), so an interrupted evaluation resumes without paying twice."""
    if args.backend == "hf":
        return BatchedRunner(*load_model_and_tokenizer(resolve_model(args.model)), args.batch_size)
    if args.backend == "mlm_u":
        return MaskedLMRunner(*load_model_and_tokenizer(resolve_model(args.model), masked_lm=True), args.batch_size)
    if run_info is not None:
        model = run_info.get("fine_tuned_model")
        if not model:
            raise EvaluationError(f"{run_folder.run_info_path(args.model)}: no fine_tuned_model (not an OpenAI run)")
        chat = (run_info.get("openai") or {}).get("data_format") == "chat"
    else:
        model, chat = args.model, not is_completion_model(args.model)
    client = make_client(args.base_url, max_retries=args.max_retries, timeout_s=args.timeout)
    cache = cache or run_folder.eval_dir(args.output) / f"{experiment}_openai_cache.jsonl"
    return OpenAIRunner(client, ResponseCache(cache), model, chat=chat, concurrency=args.concurrency)


def generation_budget(runner: Runner, references: Sequence[str]) -> int:
    """Tokens to generate for a set: its longest reference plus a margin (exact match needs no more)."""
    return max(runner.token_count(reference) for reference in references) + GENERATION_MARGIN


def generate_and_match(sets: dict[str, Any], runner: Runner) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Greedy generations for several sets of `prompt`/`completion` rows in one pass; exact match per set.

    Returns the metric per set and each set's DataFrame with `split`, `generation` and `exact_match` added.
    """
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
