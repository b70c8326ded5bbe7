"""Evaluation of models and run folders on the three experiments.

Modules: `loading` (model, tokenizer, PEFT adapter), `batching`, `generation` (greedy), `scoring` (completion
log-probs with the prefix cache), `data` (splits and the dataset identity), `metrics` (the `reversal_accuracy`
metric), `backends` (the `Runner` seam; `make_runner`: a local model, or `openai_runner.OpenAIRunner` at an
endpoint), `likelihood` (Exp 1's likelihood test), `reverse_mode` (reverse-trained runs' questions),
`exp1`/`exp2`/`exp3` (one evaluator each), `run` (a run folder as its run_info.json says), `curves` (learning curves
measured during training), `cli` (`reversal-hf eval`).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """`reversal-hf eval` (`evaluation.cli`), imported when called: the library modules stay quick to import."""
    from reversal_hf.evaluation import cli

    return cli.main(argv)
