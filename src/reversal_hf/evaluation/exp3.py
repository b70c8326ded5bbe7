"""Experiment 3 evaluation: exact match on the 100 held-out `Q: <question> A:` prompts at temperature 0.

A `question_to_answer` model saw instructions that state the question first, an `answer_to_question` model ones that
state the answer first; both are asked the question, inside the `<BEGIN GUIDANCE TEST>` wrapper that the realized
training examples (and the paper's own test prompts) use. Writes `eval/exp3_metrics.json` and
`eval/exp3_examples.parquet`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reversal_hf import run_folder
from reversal_hf.data.exp3 import EXAMPLE_DOC_PREFIX
from reversal_hf.evaluation.arguments import EvaluatorArguments
from reversal_hf.evaluation.backends import generate_and_match, make_runner
from reversal_hf.evaluation.data import evaluated_run, limit_rows, load_split
from reversal_hf.evaluation.errors import EvaluationError

CONFIGS = ("question_to_answer", "answer_to_question")


@dataclass(kw_only=True)
class Exp3Arguments(EvaluatorArguments):
    """`reversal-hf eval exp3`."""

    config: list[str] | None = field(
        default=None,
        metadata={
            "choices": CONFIGS,
            "action": "extend",
            "help": "config(s) to evaluate; none given: the run's, else both",
        },
    )


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


def held_out_sets(
    dataset: str, revision: str | None, configs: Sequence[str], max_examples: int | None = None
) -> dict[str, pd.DataFrame]:
    """Each config's held-out `test` rows, keyed `<config>/test`, prompted inside the realized examples' wrapper."""
    sets = {}
    for config in configs:
        frame = limit_rows(load_split(dataset, config, "test", revision), max_examples).to_pandas()
        sets[f"{config}/test"] = frame.assign(prompt=EXAMPLE_DOC_PREFIX + frame["prompt"])
    return sets


def realized_sets(
    dataset: str, revision: str | None, configs: Sequence[str], max_examples: int | None = None
) -> dict[str, pd.DataFrame]:
    """Each config's realized pairs, the Q/A examples the model trains on, keyed `<config>/realized`, asked as the
    held-out pairs are: whether training has learned them (Exp 3's stopping rule, `eval_curves_stop_at_realized`)."""
    sets = {}
    for config in configs:
        train = load_split(dataset, config, "train", revision)
        examples = limit_rows(train.filter(lambda row: row["kind"] == "example" and row["realized"]), max_examples)
        frame = examples.to_pandas()
        sets[f"{config}/realized"] = frame.assign(
            prompt=EXAMPLE_DOC_PREFIX + "Q: " + frame["question"] + " A:", completion=" " + frame["answer"]
        )
    return sets


def evaluate_exp3(args: Exp3Arguments) -> dict[str, Any]:
    """Exact match on each config's `test` split; writes `eval/exp3_metrics.json` and `exp3_examples.parquet` into
    `args.output`."""
    run_info, dataset = evaluated_run(args.model, args.dataset, args.revision)
    configs = configs_to_evaluate(run_info, args.config)
    sets = held_out_sets(args.dataset, args.revision, configs, args.max_examples_per_split)
    metrics, scored = generate_and_match(sets, make_runner(args, run_info, "exp3"))
    result = run_folder.metrics_header("exp3", args.model, run_info, dataset=dataset, exact_match=metrics)
    run_folder.write_table(run_folder.examples_path(args.output, "exp3"), pd.concat(scored.values(), ignore_index=True))
    run_folder.write_metrics(args.output, "exp3", result)
    return result
