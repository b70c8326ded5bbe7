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
import json
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from reversal_hf import paths
from reversal_hf.evaluation.common import (
    BatchedRunner,
    EvaluationError,
    completion_logprobs,
    completion_losses,
    greedy_generate,
    load_model_and_tokenizer,
)
from reversal_hf.evaluation.exp1 import Exp1Data, evaluate_splits
from reversal_hf.models import ModelPrepareError, resolve_model

LOGPROB_TOLERANCE = 1e-4


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

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [
            completion_logprobs(self.model, self.tokenizer, [p], [c], batch_size=1, description="")[0]
            for p, c in zip(prompts, completions, strict=True)
        ]

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [
            completion_losses(self.model, self.tokenizer, [p], [c], batch_size=1, description="")[0]
            for p, c in zip(prompts, completions, strict=True)
        ]

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
        "likelihood_identical": significance_equal and max_difference <= LOGPROB_TOLERANCE,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = resolve_model(args.model)
    model, tokenizer = load_model_and_tokenizer(model_path)
    data = Exp1Data.load(str(args.dataset), args.revision, args.max_examples_per_split)
    timings, metrics = {}, {}
    runners = {
        "per_example": PerExampleRunner(model, tokenizer),
        "batched": BatchedRunner(model, tokenizer, args.batch_size),
    }
    for name, runner in runners.items():
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        metrics[name], _ = evaluate_splits(data, runner, seed=args.seed)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings[name] = time.perf_counter() - start
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
        "torch_threads": torch.get_num_threads(),
        "model": model_path,
        "rows": sum(len(frame) for frame in data.splits.values()),
        "batch_size": args.batch_size,
        "per_example_s": round(timings["per_example"], 2),
        "batched_s": round(timings["batched"], 2),
        "speedup": round(timings["per_example"] / timings["batched"], 2),
        **compare(metrics["batched"], metrics["per_example"]),
        "exact_match": metrics["batched"]["exact_match"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-exp1", help="registered model name, folder or Hub id")
    parser.add_argument("--dataset", type=Path, default=paths.DATASETS_DIR / "reversal-exp1")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--max-examples-per-split", type=int, default=None, help="rows per split (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except (EvaluationError, ModelPrepareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    identical = result["exact_match_identical"] and result["likelihood_identical"]
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
