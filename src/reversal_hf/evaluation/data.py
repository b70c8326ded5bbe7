"""The evaluation data of a run: dataset splits at a revision (Exp 1's as `Exp1Data`), cut evenly for quick runs, and
the dataset identity checked against the one the run was trained on."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reversal_hf import run_folder
from reversal_hf.evaluation.errors import EvaluationError, first_line

logger = logging.getLogger(__name__)

# Experiment 1's splits scored by exact match (the ones the paper reports).
EXACT_MATCH_SPLITS = (
    "p2d/test",
    "p2d/reverse_test",
    "p2d/reverse_test_randomized",
    "d2p/test",
    "d2p/reverse_test",
    "d2p/reverse_test_randomized",
    "both/test",
    "all/validation",
)


def load_split(dataset: str, config: str, split: str, revision: str | None = None) -> Any:
    """One split of a dataset folder (checked against its build's content hash) or Hub id at `revision`; a missing
    dataset, config, split or revision, or a changed shard, is an `EvaluationError` naming it."""
    try:
        return run_folder.load_dataset_split(dataset, config, split, revision)
    except Exception as error:  # datasets raises many types (FileNotFound, DatasetNotFound, ValueError, Hub errors)
        where = f"{dataset}" + (f"@{revision}" if revision else "")
        raise EvaluationError(f"dataset {where} {config}/{split}: {first_line(error)}") from error


def checked_dataset_identity(
    dataset: str, revision: str | None, run_info: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The metrics' `dataset` block; a local folder's content hash must be the one the run trained on."""
    if revision and Path(dataset).is_dir():
        logger.warning("%s is a local folder: revision %r does not apply (content_hash is checked)", dataset, revision)
    identity = run_folder.dataset_identity(dataset, revision)
    content_hash = identity["content_hash"]
    trained_hash = ((run_info or {}).get("dataset") or {}).get("content_hash")
    if content_hash and trained_hash and content_hash != trained_hash:
        build_info = Path(run_folder.resolve_local(dataset)) / run_folder.BUILD_INFO
        raise EvaluationError(
            f"{build_info}: content_hash {content_hash[:12]} differs from the run's dataset ({trained_hash[:12]})"
        )
    return {**identity, "content_hash": content_hash or trained_hash}


def limited_indices(length: int, max_examples: int | None) -> list[int]:
    """Row indices of at most `max_examples` rows, evenly spaced so that a small sample still spans many facts."""
    if max_examples is None or length <= max_examples:
        return list(range(length))
    if max_examples < 1:
        raise EvaluationError(f"max_examples_per_split must be at least 1, got {max_examples}")
    step = length / max_examples
    return [int(i * step) for i in range(max_examples)]


def limit_rows(dataset: Any, max_examples: int | None) -> Any:
    """A `datasets.Dataset` cut to `limited_indices` (for quick runs and tests)."""
    indices = limited_indices(len(dataset), max_examples)
    return dataset if len(indices) == len(dataset) else dataset.select(indices)


def evaluated_run(model_or_run_dir: str, dataset: str, revision: str | None) -> tuple[dict[str, Any] | None, dict]:
    """The `run_info.json` of the evaluated folder (None for a model not trained here) and the metrics' `dataset`
    block, checked against the data that run was trained on."""
    run_info = run_folder.read_run_info(model_or_run_dir) if Path(model_or_run_dir).is_dir() else None
    return run_info, checked_dataset_identity(dataset, revision, run_info)


@dataclass(frozen=True)
class Exp1Data:
    """The splits an evaluation reads, as DataFrames keyed `config/split`: `splits` are the evaluated rows (limited
    for quick runs), `full` every row (the pools random completions, shots and prompt-tuning rows come from)."""

    splits: dict[str, pd.DataFrame]
    full: dict[str, pd.DataFrame]

    @classmethod
    def load(
        cls,
        dataset: str,
        revision: str | None,
        max_examples_per_split: int | None = None,
        keys: Sequence[str] = EXACT_MATCH_SPLITS,
    ) -> Exp1Data:
        """The `keys` splits (`p2d/train` too: the default prompt-tuning fact comes from it)."""
        full = {}
        for key in dict.fromkeys((*keys, "p2d/train")):
            config, split = key.split("/")
            full[key] = load_split(dataset, config, split, revision).to_pandas()
        splits = {
            key: full[key].iloc[limited_indices(len(full[key]), max_examples_per_split)].reset_index(drop=True)
            for key in keys
        }
        return cls(splits, full)

    def tuned_fact_sets(self, fact: str, keys: Sequence[str], limit: int | None = None) -> dict[str, pd.DataFrame]:
        """The held-out rows of one fact per split (`limit` evenly spaced rows at most), for a prompt-tuned run: a soft
        prompt tuned on one fact (Appendix B.8) says nothing about the others."""
        sets = {}
        for key in keys:
            rows = self.full[key].query("name == @fact")
            if len(rows):
                sets[key] = rows.iloc[limited_indices(len(rows), limit)].reset_index(drop=True)
        return sets
