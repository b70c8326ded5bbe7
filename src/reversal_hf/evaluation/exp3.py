"""Experiment 3 evaluation: exact match on the 100 held-out `Q: <question> A:` prompts at temperature 0.

A `question_to_answer` model saw instructions that state the question first, an `answer_to_question` model ones that
state the answer first; both are asked the question, inside the `<BEGIN GUIDANCE TEST>` wrapper that the realized
training examples (and the paper's own test prompts) use. Writes `eval/exp3_metrics.json` and
`eval/exp3_examples.parquet`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reversal_hf.data.exp3 import EXAMPLE_DOC_PREFIX
from reversal_hf.evaluation.common import (
    EVAL_DIRNAME,
    BatchedRunner,
    EvaluationError,
    dataset_info,
    evaluator_parser,
    generate_and_match,
    limit_rows,
    load_model_and_tokenizer,
    load_split,
    read_run_info,
    run_and_summarize,
    write_examples,
    write_json,
)

CONFIGS = ("question_to_answer", "answer_to_question")


def configs_to_evaluate(run_info: dict[str, Any] | None, configs: Sequence[str] | None) -> list[str]:
    """The configs asked for, else the one the run was trained on, else both."""
    chosen = list(configs or [])
    trained = ((run_info or {}).get("dataset") or {}).get("config")
    if not chosen:
        chosen = [trained] if trained in CONFIGS else list(CONFIGS)
    unknown = [config for config in chosen if config not in CONFIGS]
    if unknown:
        raise EvaluationError(f"config {unknown[0]!r} is not an Experiment 3 config ({', '.join(CONFIGS)})")
    return chosen


def evaluate_exp3(
    model_or_run_dir: str | Path,
    dataset_name_or_path: str,
    revision: str | None = None,
    output_dir: str | Path | None = None,
    configs: Sequence[str] | None = None,
    batch_size: int = 32,
    max_examples_per_split: int | None = None,
) -> dict[str, Any]:
    """Exact match on each config's `test` split; `output_dir` defaults to the model folder."""
    output = Path(output_dir if output_dir is not None else model_or_run_dir)
    run_info = read_run_info(model_or_run_dir) if Path(model_or_run_dir).is_dir() else None
    dataset = dataset_info(dataset_name_or_path, revision, run_info)
    sets = {
        f"{config}/test": limit_rows(
            load_split(dataset_name_or_path, config, "test", revision), max_examples_per_split
        ).to_pandas()
        for config in configs_to_evaluate(run_info, configs)
    }
    for frame in sets.values():
        frame["prompt"] = EXAMPLE_DOC_PREFIX + frame["prompt"]
    model, tokenizer = load_model_and_tokenizer(model_or_run_dir)
    metrics, scored = generate_and_match(sets, BatchedRunner(model, tokenizer, batch_size))
    result = {
        "experiment": "exp3",
        "run_dir": str(model_or_run_dir) if run_info is not None else None,
        "model": (run_info or {}).get("model_name_or_path") or str(model_or_run_dir),
        "dataset": dataset,
        "exact_match": metrics,
    }
    write_examples(output / EVAL_DIRNAME / "exp3_examples.parquet", pd.concat(scored.values(), ignore_index=True))
    write_json(output / EVAL_DIRNAME / "exp3_metrics.json", result)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = evaluator_parser("exp3", __doc__.splitlines()[0])
    parser.add_argument("--config", action="append", choices=CONFIGS, help="config(s) to evaluate (default: both)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_and_summarize(
        lambda: evaluate_exp3(
            args.model,
            args.dataset,
            args.revision,
            args.output,
            configs=args.config,
            batch_size=args.batch_size,
            max_examples_per_split=args.max_examples_per_split,
        ),
        args.output / EVAL_DIRNAME / "exp3_metrics.json",
    )
