"""Experiment 1 evaluation speed: our batched evaluation against the straightforward per-example loop, in one run.

Both evaluate the same model on the same rows with the same code (`reversal_hf.evaluation.exp1.evaluate_splits`);
only the runner differs:

- `per_example`: one `generate` call per prompt and one forward pass per log-prob, as a first implementation would;
- `batched`: `BatchedRunner`: prompts de-duplicated across splits, left-padded generation batches of similar
  length, one forward pass per batch of log-probs.

Prints wall times, their ratio, and whether the metrics are identical (exact match exactly; log-probs to 1e-4).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench import _common
from reversal_hf import paths
from reversal_hf.evaluation.backends import BatchedRunner
from reversal_hf.evaluation.data import Exp1Data
from reversal_hf.evaluation.exp1 import evaluate_splits
from reversal_hf.evaluation.generation import greedy_generate
from reversal_hf.evaluation.scoring import score_completions


@dataclass
class PerExampleRunner:
    """The baseline: every prompt generated alone, every completion scored in its own forward pass."""

    model: Any
    tokenizer: Any

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        return [
            greedy_generate(self.model, self.tokenizer, [prompt], budget, batch_size=1, description="")[0]
            for prompt, budget in zip(prompts, max_new_tokens, strict=True)
        ]

    def scores(self, prompts: Sequence[str], completions: Sequence[str]) -> list[tuple[float, int]]:
        return [
            score_completions(self.model, self.tokenizer, [p], [c], batch_size=1, description="")[0]
            for p, c in zip(prompts, completions, strict=True)
        ]

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [-total / count for total, count in self.scores(prompts, completions)]

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def compare(batched: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Exact-match results must be equal; likelihood numbers equal up to float summation order."""
    differences = [
        abs(value - baseline["likelihood"][split][name])
        for split, result in batched["likelihood"].items()
        for name, value in result.items()
        if isinstance(value, float) and name.startswith("mean_")
    ]
    significance_equal = all(
        result["significant"] == baseline["likelihood"][split]["significant"]
        for split, result in batched["likelihood"].items()
    )
    max_difference = max(differences, default=0.0)
    return {
        "exact_match_identical": batched["exact_match"] == baseline["exact_match"],
        "max_mean_logprob_difference": max_difference,
        "likelihood_identical": significance_equal and max_difference <= _common.LOGPROB_TOLERANCE,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    model_path, model, tokenizer = _common.load_model(args)
    data = Exp1Data.load(str(args.dataset), args.revision, args.max_examples_per_split)
    timings, metrics = {}, {}
    runners = {
        "per_example": PerExampleRunner(model, tokenizer),
        "batched": BatchedRunner(model, tokenizer, args.batch_size),
    }
    for name, runner in runners.items():
        (metrics[name], _), timings[name] = _common.timed(functools.partial(evaluate_splits, data, runner))
    return {
        **_common.run_header(model_path),
        "rows": sum(len(frame) for frame in data.splits.values()),
        "batch_size": args.batch_size,
        "per_example_s": round(timings["per_example"], 2),
        "batched_s": round(timings["batched"], 2),
        "speedup": round(timings["per_example"] / timings["batched"], 2),
        **compare(metrics["batched"], metrics["per_example"]),
        "exact_match": metrics["batched"]["exact_match"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = _common.add_model_arguments(
        argparse.ArgumentParser(description=__doc__.splitlines()[0]), paths.DATASETS_DIR / "reversal-exp1"
    )
    parser.add_argument("--max-examples-per-split", type=int, default=None, help="rows per split (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = _common.add_run_arguments(parser).parse_args(argv)
    result = _common.run_and_report(run, args)
    if result is None:
        return 1
    identical = result["exact_match_identical"] and result["likelihood_identical"]
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
