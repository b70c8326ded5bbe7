"""A text transform over a whole dataset: the original rows, then one reversed row each, as batched `Dataset.map`."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import datasets

from reversal_hf.data.reversal.text import EntitySource, ReversalError, TextReversal

REVERSED_COLUMN = "reversed"


def check_columns(dataset: datasets.Dataset, needed: Iterable[str], what: str) -> None:
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise ReversalError(f"{what}: the dataset has no column {missing[0]!r} (columns: {dataset.column_names})")
    if REVERSED_COLUMN in dataset.column_names:
        raise ReversalError(f"{what}: the dataset already has a {REVERSED_COLUMN!r} column (reversed twice?)")


def _rows(batch: dict[str, list]) -> Iterator[dict[str, Any]]:
    return (dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True))


def _reverse_batch(batch: dict[str, list], reversal: TextReversal, entity_source: EntitySource | None) -> dict:
    texts = [prompt + completion for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True)]
    if entity_source is None:
        reversed_texts = [reversal.apply(text) for text in texts]
    else:
        rows = zip(_rows(batch), texts, strict=True)
        reversed_texts = [reversal.apply(text, entity_source.entities(row, text)) for row, text in rows]
    return {**batch, "prompt": [""] * len(texts), "completion": reversed_texts, REVERSED_COLUMN: [True] * len(texts)}


def _mark_originals(batch: dict[str, list]) -> dict:
    return {REVERSED_COLUMN: [False] * len(next(iter(batch.values())))}


def with_marker(features: datasets.Features) -> datasets.Features:
    return datasets.Features({**features, REVERSED_COLUMN: datasets.Value("bool")})


def map_batched(
    dataset: datasets.Dataset, function: Callable[..., dict], features: datasets.Features, **kwargs: Any
) -> datasets.Dataset:
    """Batched `Dataset.map`, never read from the cache: these maps are cheap, and the cache fingerprint does not
    hash this module's code, so a cached result would outlive a change to it."""
    return dataset.map(function, batched=True, features=features, load_from_cache_file=False, **kwargs)


def marked_originals(dataset: datasets.Dataset, features: datasets.Features) -> datasets.Dataset:
    return map_batched(dataset, _mark_originals, features, desc="Marking original rows")


def add_reversed_rows(
    dataset: datasets.Dataset,
    reversal: TextReversal,
    entity_source: EntitySource | None = None,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """The original rows, then each row's text reversed as one empty-prompt document (`word`, `entity`, `segment`)."""
    if reversal.kind == "entity" and entity_source is None:
        raise ReversalError("reversal_transform: entity needs the dataset's entities (an EntitySource)")
    entity_source = entity_source if reversal.kind == "entity" else None
    needed = ("prompt", "completion", *(entity_source.required_columns() if entity_source else ()))
    check_columns(dataset, needed, f"reversal_transform: {reversal.kind}")
    features = with_marker(dataset.features)
    reversed_rows = map_batched(
        dataset,
        _reverse_batch,
        features,
        fn_kwargs={"reversal": reversal, "entity_source": entity_source},
        num_proc=num_proc,
        desc=f"Reversing documents ({reversal.kind})",
    )
    return datasets.concatenate_datasets([marked_originals(dataset, features), reversed_rows])
