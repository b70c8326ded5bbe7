"""The training set of a recipe's `reversal_transform`: the original rows plus the rows the transform adds."""

from __future__ import annotations

from typing import Any

import datasets

from reversal_hf.data.reversal.both_orders import add_other_order_rows
from reversal_hf.data.reversal.rows import add_reversed_rows
from reversal_hf.data.reversal.text import (
    DEFAULT_MAX_SEGMENT_WORDS,
    DEFAULT_SEPARATOR,
    TEXT_TRANSFORMS,
    EntitySource,
    ReversalError,
    TextReversal,
)
from reversal_hf.data.reversal.tokens import add_reversed_token_rows

TRANSFORMS = (*TEXT_TRANSFORMS, "token", "both_orders")


def reverse_train_dataset(
    dataset: datasets.Dataset,
    transform: str,
    *,
    entity_source: EntitySource | None = None,
    tokenizer: Any = None,
    seed: int = 0,
    max_segment_words: int = DEFAULT_MAX_SEGMENT_WORDS,
    separator: str = DEFAULT_SEPARATOR,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """The training set for a recipe's `reversal_transform`: the original rows plus the rows the transform adds."""
    if transform in TEXT_TRANSFORMS:
        reversal = TextReversal(transform, seed, max_segment_words, separator)
        return add_reversed_rows(dataset, reversal, entity_source, num_proc)
    if transform == "token":
        if tokenizer is None:
            raise ReversalError("reversal_transform: token needs the model's tokenizer")
        return add_reversed_token_rows(dataset, tokenizer, num_proc)
    if transform == "both_orders":
        return add_other_order_rows(dataset)
    raise ReversalError(f"reversal_transform: unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")
