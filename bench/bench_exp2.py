"""Experiment 2 `hf` back-end speed: completion log-probs with and without the shared-prefix cache, in one run.

Both score the same requests (`reversal_hf.evaluation.exp2.completion_requests`: every parent and child question of
N pairs after the few-shot prompt) with `completion_logprobs`, in the same batches; only `prefix_cache` differs:

- `plain`: every batch runs the whole few-shot prompt, question and answer;
- `cached`: the token prefix all prompts share runs once, and every batch runs only question and answer on its keys
  and values.

Prints wall times, their ratio and the largest difference of a log-prob between the two (must stay within 1e-4).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from reversal_hf import paths
from reversal_hf.evaluation.common import EvaluationError, completion_logprobs, load_model_and_tokenizer
from reversal_hf.evaluation.exp2 import completion_requests, load_pairs
from reversal_hf.models import ModelPrepareError, resolve_model

LOGPROB_TOLERANCE = 1e-4


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = resolve_model(args.model)
    model, tokenizer = load_model_and_tokenizer(model_path)
    prompts, completions = completion_requests(load_pairs(str(args.dataset), args.revision, args.max_pairs))
    completion_logprobs(model, tokenizer, prompts[:2], completions[:2], description="warm-up")
    timings, logprobs = {}, {}
    for name, prefix_cache in (("plain", False), ("cached", True)):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        logprobs[name] = completion_logprobs(
            model, tokenizer, prompts, completions, args.batch_size, name, prefix_cache=prefix_cache
        )
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        timings[name] = time.perf_counter() - start
    max_difference = max(abs(a - b) for a, b in zip(logprobs["plain"], logprobs["cached"], strict=True))
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
        "torch_threads": torch.get_num_threads(),
        "model": model_path,
        "pairs": len(prompts) // 2,
        "sequences": len(prompts),
        "prompt_tokens": len(tokenizer(prompts[0])["input_ids"]),
        "batch_size": args.batch_size,
        "plain_s": round(timings["plain"], 2),
        "cached_s": round(timings["cached"], 2),
        "speedup": round(timings["plain"] / timings["cached"], 2),
        "max_logprob_difference": max_difference,
        "identical": max_difference <= LOGPROB_TOLERANCE,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-exp1", help="registered model name, folder or Hub id")
    parser.add_argument("--dataset", type=Path, default=paths.DATASETS_DIR / "reversal-exp2")
    parser.add_argument("--revision", default=None)
    parser.add_argument("--max-pairs", type=int, default=40, help="pairs, spread over the dataset")
    parser.add_argument("--batch-size", type=int, default=16)
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
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
