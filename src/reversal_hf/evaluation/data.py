"""The evaluation data of a run: dataset splits at a revision, cut evenly for quick runs, and the dataset identity
checked against the one the run was trained on."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from reversal_hf import run_folder
from reversal_hf.evaluation.errors import EvaluationError, first_line

logger = logging.getLogger(__name__)


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
