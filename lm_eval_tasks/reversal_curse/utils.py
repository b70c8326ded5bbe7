"""The Reversal Curse tasks' code: loading our datasets, and scoring as `reversal-hf eval` does.

Every rule comes from `reversal_hf` itself (the paper's exact match, Exp 1's random completions, Exp 2's prompts,
Exp 3's wrapper), so the harness and our evaluator cannot drift apart; lm-eval imports this file by the task YAMLs'
`!function utils.<name>`, so `reversal_hf` must be installed beside `lm_eval` (`pip install -e ".[lm-eval]"`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import datasets

from reversal_hf.data.exp3 import EXAMPLE_DOC_PREFIX
from reversal_hf.data.prompts import CHAT_FEW_SHOT, completion_prompt
from reversal_hf.evaluation.data import load_split
from reversal_hf.evaluation.exp2 import PROBABILITY_THRESHOLD
from reversal_hf.evaluation.likelihood import other_facts_completions
from reversal_hf.metrics.reversal_accuracy.reversal_accuracy import is_exact_match
from reversal_hf.paths import DATASETS_DIR

# The one switch between the local build and the Hub, passed as lm-eval's `--metadata`:
# '{"reversal_datasets": "<org>@<revision>"}' (or a folder holding reversal-exp1..3). Unset: build/datasets.
SOURCE_KEY = "reversal_datasets"


def dataset_source(experiment: str, source: str | None) -> tuple[str, str | None]:
    """(folder or Hub id, revision) of `experiment` (`reversal-expN`): the local build by default, a folder holding
    the built datasets, or a Hub organization with an optional `@revision`."""
    if not source:
        return str(DATASETS_DIR / experiment), None
    if Path(source).is_dir():
        return str(Path(source) / experiment), None
    org, _, revision = source.partition("@")
    return f"{org}/{experiment}", revision or None


def load(experiment: str, config: str, split: str, **metadata: Any) -> datasets.DatasetDict:
    """lm-eval's `custom_dataset`: one split through our loader (a local build is checked against its content hash,
    a Hub id is read at its revision). lm-eval passes the task's `dataset_kwargs` and every `--metadata` (and model
    argument) as keywords; only `reversal_datasets` is read from the latter."""
    name, revision = dataset_source(experiment, metadata.get(SOURCE_KEY))
    return datasets.DatasetDict({split: load_split(name, config, split, revision)})


# ---------------------------------------------------------------- Experiment 1


def exact_match(doc: dict[str, Any], results: list[str]) -> dict[str, bool]:
    """The paper's rule (both stripped, case-insensitive, the generation starts with the target), not lm-eval's
    stock `exact_match` (whole-string equality, which reads 0% where this reads 86%)."""
    return {"paper_exact_match": is_exact_match(results[0], doc["completion"])}


def with_random_completions(split: datasets.Dataset) -> datasets.Dataset:
    """Each row's random completions, as our likelihood test draws them: every other fact's completion under the
    row's template in the whole split (`evaluation.exp1.other_facts_completions`), whatever `--limit` keeps."""
    frame = split.to_pandas()
    return split.add_column("random_completions", other_facts_completions(frame, frame, "lm-eval"))


def completions(doc: dict[str, Any]) -> list[str]:
    """Choice 0 is the correct completion, the others its random completions: lm-eval's per-sample log then holds
    every log-prob the paired test needs (`reversal-hf lm-eval-report`)."""
    return [doc["completion"], *doc["random_completions"]]


# ---------------------------------------------------------------- Experiment 2


def parent_prompt(doc: dict[str, Any]) -> str:
    """The paper's few-shot base-model transcript (Appendix C.1) ending in the parent question."""
    return completion_prompt(doc["parent_query"])


def child_prompt(doc: dict[str, Any]) -> str:
    """The same transcript ending in the child question."""
    return completion_prompt(doc["child_query"])


def parent_completion(doc: dict[str, Any]) -> str:
    """What our `hf` back-end scores after the parent question: the name with its leading space."""
    return f" {doc['parent']}"


def child_completion(doc: dict[str, Any]) -> str:
    """What our `hf` back-end scores after the child question."""
    return f" {doc['child']}"


def parent_found(doc: dict[str, Any], results: list[str]) -> dict[str, bool]:
    """The paper's match rule on the parent question's answer."""
    return {"paper_exact_match": is_exact_match(results[0], doc["parent"])}


def child_found(doc: dict[str, Any], results: list[str]) -> dict[str, bool]:
    """The paper's match rule on the child question's answer."""
    return {"paper_exact_match": is_exact_match(results[0], doc["child"])}


def name_probability(doc: dict[str, Any], results: list[tuple[float, bool]]) -> dict[str, float | bool]:
    """Our `hf` back-end's scores: the name's probability exp(log-prob) (mean: the accuracy Figure 5 plots for
    Llama), its log-prob, and whether it clears the authors' threshold."""
    logprob = results[0][0]
    probability = math.exp(logprob)
    return {"probability": probability, "logprob": logprob, "found": probability >= PROBABILITY_THRESHOLD}


def chat_shots(role: str) -> list[dict[str, str]]:
    """The paper's three chat few-shot turns (Appendix C.1) as docs of a `role` (`parent`/`child`) task."""
    return [{f"{role}_query": question, role: answer} for question, answer in CHAT_FEW_SHOT]


def parent_chat_shots() -> list[dict[str, str]]:
    return chat_shots("parent")


def child_chat_shots() -> list[dict[str, str]]:
    return chat_shots("child")


# ---------------------------------------------------------------- Experiment 3


def exp3_prompt(doc: dict[str, Any]) -> str:
    """The held-out question inside the wrapper the realized training examples use, as `evaluation.exp3` asks it."""
    return EXAMPLE_DOC_PREFIX + doc["prompt"]
