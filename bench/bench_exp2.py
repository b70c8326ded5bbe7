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
import functools
import sys
from typing import Any

from bench import _common
from reversal_hf import paths
from reversal_hf.evaluation.exp2 import completion_requests, load_pairs
from reversal_hf.evaluation.scoring import completion_logprobs


def run(args: argparse.Namespace) -> dict[str, Any]:
    model_path, model, tokenizer = _common.load_model(args)
    prompts, completions = completion_requests(load_pairs(str(args.dataset), args.revision, args.max_pairs))
    completion_logprobs(model, tokenizer, prompts[:2], completions[:2], description="warm-up")
    score = functools.partial(completion_logprobs, model, tokenizer, prompts, completions, batch_size=args.batch_size)
    timings, logprobs = {}, {}
    for name, prefix_cache in (("plain", False), ("cached", True)):
        logprobs[name], timings[name] = _common.timed(functools.partial(score, name, prefix_cache=prefix_cache))
    max_difference = max(abs(a - b) for a, b in zip(logprobs["plain"], logprobs["cached"], strict=True))
    return {
        **_common.run_header(model_path),
        "pairs": len(prompts) // 2,
        "sequences": len(prompts),
        "prompt_tokens": len(tokenizer(prompts[0])["input_ids"]),
        "batch_size": args.batch_size,
        "plain_s": round(timings["plain"], 2),
        "cached_s": round(timings["cached"], 2),
        "speedup": round(timings["plain"] / timings["cached"], 2),
        "max_logprob_difference": max_difference,
        "identical": max_difference <= _common.LOGPROB_TOLERANCE,
    }


def main(argv: list[str] | None = None) -> int:
    parser = _common.add_model_arguments(
        argparse.ArgumentParser(description=__doc__.splitlines()[0]), paths.DATASETS_DIR / "reversal-exp2"
    )
    parser.add_argument("--max-pairs", type=int, default=40, help="pairs, spread over the dataset")
    parser.add_argument("--batch-size", type=int, default=16)
    args = _common.add_run_arguments(parser).parse_args(argv)
    result = _common.run_and_report(run, args)
    if result is None:
        return 1
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
