"""Experiment 2 (celebrity parents): a model that names a celebrity's parent often cannot name the parent's child.

Two back-ends, reached through `backends.make_runner`, over the same `reversal-exp2` pairs, scored in both directions
(parent given child, child given parent):

- `openai`: chat models behind any OpenAI-compatible endpoint, sent the paper's system prompt and few-shot turns
  (Appendix C.1). Each question is sampled `--samples` times (paper: 10 at temperature 1); a pair's score is the
  fraction of samples that start with the right name (both stripped, case-insensitive), like the paper's
  `gpt-3.5-turbo_can_find_*` columns (0.0, 0.1, ..., 1.0). Accuracy is the mean over pairs.
- `hf`: local base models, as the paper did for Llama-1: the summed log-prob of " <parent>" after the few-shot
  completion prompt ending in the parent question, and of " <child>" after the child question (`*_logprob`
  columns). Accuracy is the mean probability exp(log-prob), which is what the paper's Figure 5 plots for Llama.

A pair is reversible for a model when it finds both names: for sampling, at least one right sample each way (the rule
that made GPT-4's `can_reverse`); for log-probs, a probability of at least `PROBABILITY_THRESHOLD` each way (the
threshold of the authors' test script).

Writes, into `<output>/eval/`: `exp2_<model>_reversal_test_results.csv` in the paper's columns (so ours and the
paper's plot together), `exp2_metrics.json`, and `exp2_examples.parquet` (per pair: scores, reversibility and, for
sampling, every answer).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from reversal_hf import run_folder
from reversal_hf.data.prompts import chat_messages, completion_prompt
from reversal_hf.evaluation.arguments import EndpointArguments
from reversal_hf.evaluation.backends import Runner, make_runner
from reversal_hf.evaluation.data import checked_dataset_identity, limit_rows, load_split
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.metrics.reversal_accuracy.reversal_accuracy import is_exact_match

PAIR_COLUMNS = ("child", "parent", "parent_type", "child_prediction", "can_reverse", "parent_query", "child_query")
PROBABILITY_THRESHOLD = 0.1
# The answer each question of the `hf` back-end is scored on: (answer column, question column).
HF_ROLES = (("parent", "parent_query"), ("child", "child_query"))
POSITIVE_FIELDS = ("samples", "max_tokens", "concurrency", "batch_size", "max_pairs")


@dataclass(kw_only=True)
class Exp2Arguments(EndpointArguments):
    """`reversal-hf eval exp2`: the back-end, the model, the dataset, sampling (openai) and batching (hf)."""

    backend: Literal["openai", "hf"] = field(metadata={"help": "openai: chat endpoint; hf: local model"})
    model: str = field(metadata={"help": "model name at the endpoint, or a local folder / Hub id (hf)"})
    dataset: str = field(metadata={"help": "reversal-exp2 folder or Hub id"})
    revision: str | None = field(default=None, metadata={"help": "dataset revision (Hub tag, branch or commit)"})
    samples: int = field(default=10, metadata={"help": "samples per question (openai)"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature (openai)"})
    max_tokens: int = field(default=32, metadata={"help": "answer length limit (openai)"})
    extra_body: dict[str, Any] | str | None = field(
        default=None,
        metadata={
            "help": "JSON object of server-specific request fields (openai), e.g. for `transformers serve` to sample: "
            '\'{"generation_config": "{\\"do_sample\\": true}"}\''
        },
    )
    cache: Path | None = field(
        default=None, metadata={"help": "response cache (default: <output>/eval/exp2_<model>_cache.jsonl)"}
    )
    batch_size: int = field(default=16, metadata={"help": "prompts per forward pass (hf)"})
    max_pairs: int | None = field(default=None, metadata={"help": "evaluate N pairs spread over the dataset"})
    output: Path = field(metadata={"help": "folder that receives eval/exp2_*"})

    def __post_init__(self) -> None:
        for name in POSITIVE_FIELDS:
            value = getattr(self, name)
            if value is not None and value < 1:
                raise EvaluationError(f"{name}: must be at least 1, got {value}")
        if isinstance(self.extra_body, str):
            self.extra_body = _json_object(self.extra_body)


def model_slug(model: str) -> str:
    """The name used in file and column names: a local folder's name, or a Hub id with "/" as "--"."""
    name = Path(model).resolve().name if Path(model).exists() else model.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "model"


def load_pairs(dataset: str, revision: str | None, max_pairs: int | None) -> pd.DataFrame:
    """The `pairs/test` split of `reversal-exp2` as a DataFrame, checked for the columns the evaluation reads."""
    split = limit_rows(load_split(dataset, "pairs", "test", revision), max_pairs)
    missing = [column for column in PAIR_COLUMNS if column not in split.column_names]
    if missing:
        raise EvaluationError(f"dataset {dataset} pairs/test: missing column(s) {', '.join(missing)}")
    if len(split) == 0:
        raise EvaluationError(f"dataset {dataset} pairs/test: no rows")
    return split.to_pandas()


def sample_fraction(answers: list[str], name: str) -> float:
    """The fraction of sampled answers that start with `name` (the paper's per-question accuracy)."""
    return sum(is_exact_match(answer, name) for answer in answers) / len(answers)


def evaluate_openai(pairs: pd.DataFrame, args: Exp2Arguments, runner: Runner) -> pd.DataFrame:
    """Sample every parent and child question from the endpoint; score each pair by its fraction of right samples."""
    sampling = {"temperature": args.temperature, "max_tokens": args.max_tokens, "extra_body": args.extra_body or {}}
    questions = [*pairs["parent_query"], *pairs["child_query"]]
    answers = runner.sample([chat_messages(question) for question in questions], args.samples, **sampling)
    parent_answers, child_answers = answers[: len(pairs)], answers[len(pairs) :]
    scores = pairs.copy()
    scores["parent_answers"] = parent_answers
    scores["child_answers"] = child_answers
    scores["parent_score"] = [sample_fraction(a, n) for a, n in zip(parent_answers, pairs["parent"], strict=True)]
    scores["child_score"] = [sample_fraction(a, n) for a, n in zip(child_answers, pairs["child"], strict=True)]
    scores["parent_found"] = scores["parent_score"] > 0
    scores["child_found"] = scores["child_score"] > 0
    return scores


def completion_requests(pairs: pd.DataFrame) -> tuple[list[str], list[str]]:
    """What the `hf` back-end scores: few-shot prompts and " <name>" answers, every parent question, then every
    child question (one list, so the few-shot prefix they all share is computed once: `scoring.score_completions`)."""
    prompts = [completion_prompt(question) for _, column in HF_ROLES for question in pairs[column]]
    completions = [f" {name}" for role, _ in HF_ROLES for name in pairs[role]]
    return prompts, completions


def evaluate_hf(pairs: pd.DataFrame, runner: Runner) -> pd.DataFrame:
    """Log-prob of the right parent (child question) and the right child (parent question) under a local model."""
    logprobs = [total for total, _ in runner.scores(*completion_requests(pairs), deduplicate=False)]
    scores = pairs.copy()
    for index, (role, _) in enumerate(HF_ROLES):
        scores[f"{role}_score"] = [float(value) for value in logprobs[index * len(pairs) : (index + 1) * len(pairs)]]
        scores[f"{role}_found"] = [math.exp(value) >= PROBABILITY_THRESHOLD for value in scores[f"{role}_score"]]
    return scores


def results_table(scores: pd.DataFrame, slug: str, backend: str) -> pd.DataFrame:
    """The per-pair table in the columns of the paper's `<model>_reversal_test_results.csv`."""
    suffixes = ("_can_find_parent", "_can_find_child") if backend == "openai" else ("_parent_logprob", "_child_logprob")
    table = scores[["child", "parent", "parent_type", "child_prediction"]].copy()
    table[f"{slug}{suffixes[0]}"] = scores["parent_score"]
    table[f"{slug}{suffixes[1]}"] = scores["child_score"]
    return table


def accuracy(scores: pd.Series, backend: str) -> float:
    """Mean sample accuracy (openai) or mean probability exp(log-prob) (hf), over pairs."""
    values = scores if backend == "openai" else scores.map(math.exp)
    return float(values.mean())


def write_outputs(scores: pd.DataFrame, args: Exp2Arguments, slug: str) -> dict[str, Any]:
    """The paper-format CSV, the per-pair examples and the metrics JSON (written last: its presence means done)."""
    csv_name = f"exp2_{slug}_reversal_test_results.csv"
    run_folder.write_table(run_folder.eval_dir(args.output) / csv_name, results_table(scores, slug, args.backend))
    examples = scores.drop(columns=["parent_query", "child_query"]).assign(
        reversible=scores["parent_found"] & scores["child_found"]
    )
    run_folder.write_table(run_folder.examples_path(args.output, "exp2"), examples)
    metrics: dict[str, Any] = {
        "experiment": "exp2",
        "model": slug,
        "model_name_or_path": args.model,
        "backend": args.backend,
        "parent_accuracy": accuracy(scores["parent_score"], args.backend),
        "child_accuracy": accuracy(scores["child_score"], args.backend),
        "n_pairs": len(scores),
        "score": "fraction of samples starting with the name" if args.backend == "openai" else "mean exp(log-prob)",
        "n_parent_found": int(examples["parent_found"].sum()),
        "n_child_found": int(examples["child_found"].sum()),
        "n_reversible": int(examples["reversible"].sum()),
        "dataset": checked_dataset_identity(args.dataset, args.revision),
        "results_csv": csv_name,
    }
    if args.backend == "openai":
        metrics.update(
            samples=args.samples, temperature=args.temperature, max_tokens=args.max_tokens, extra_body=args.extra_body
        )
    run_folder.write_metrics(args.output, "exp2", metrics)
    return metrics


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise EvaluationError(f"extra_body: not JSON ({err.msg})") from None
    if not isinstance(value, dict):
        raise EvaluationError("extra_body: must be a JSON object")
    return value


def evaluate_exp2(args: Exp2Arguments) -> dict[str, Any]:
    """Score every pair both ways with the chosen back-end; write the CSV, the examples and the metrics."""
    slug = model_slug(args.model)
    pairs = load_pairs(args.dataset, args.revision, args.max_pairs)
    runner = make_runner(
        args, None, "exp2", args.cache or run_folder.eval_dir(args.output) / f"exp2_{slug}_cache.jsonl"
    )
    scores = evaluate_openai(pairs, args, runner) if args.backend == "openai" else evaluate_hf(pairs, runner)
    return write_outputs(scores, args, slug)
