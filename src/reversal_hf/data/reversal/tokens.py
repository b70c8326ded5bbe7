"""`token`: each document's token ids reversed, its special tokens aside; the rows TRL's `SFTTrainer` trains on."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

import datasets

from reversal_hf.data.reversal.rows import REVERSED_COLUMN, check_columns, map_batched, with_marker


def reverse_token_ids(input_ids: Sequence[int], special_ids: Collection[int]) -> list[int]:
    """`token`: the ids reversed, except the special tokens at either end (BOS stays first, EOS last)."""
    ids = list(input_ids)
    head = 0
    while head < len(ids) and ids[head] in special_ids:
        head += 1
    tail = len(ids)
    while tail > head and ids[tail - 1] in special_ids:
        tail -= 1
    return ids[:head] + ids[head:tail][::-1] + ids[tail:]


def _tokenize_batch(batch: dict[str, list], tokenizer: Any, reverse: bool) -> dict:
    """What TRL's `SFTTrainer` makes of prompt-completion rows (EOS appended, `completion_mask` after the prompt's
    common prefix), reversed when asked: a reversed row is trained whole, its special tokens aside."""
    special_ids = set(tokenizer.all_special_ids)
    eos = tokenizer.eos_token or ""
    rows = {"input_ids": [], "completion_mask": []}
    for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True):
        completion = completion if completion.endswith(eos) else completion + eos
        ids = tokenizer(prompt + completion)["input_ids"]
        if reverse:
            ids = reverse_token_ids(ids, special_ids)
            prefix = next((n for n, i in enumerate(ids) if i not in special_ids), len(ids))
        else:
            prompt_ids = tokenizer(prompt)["input_ids"]
            prefix = next((n for n, (a, b) in enumerate(zip(prompt_ids, ids, strict=False)) if a != b), None)
            prefix = min(len(prompt_ids), len(ids)) if prefix is None else prefix
        mask = [0] * prefix + [1] * (len(ids) - prefix)
        rows["input_ids"].append(ids)
        rows["completion_mask"].append(mask)
    return {**batch, **rows, REVERSED_COLUMN: [reverse] * len(batch["prompt"])}


def add_reversed_token_rows(dataset: datasets.Dataset, tokenizer: Any, num_proc: int | None = None) -> datasets.Dataset:
    """`token` for a whole dataset: tokenized rows (`input_ids`, `completion_mask`), then their token-reversed twins.

    The result is pre-tokenized, so `SFTTrainer` skips its own tokenization; the text columns stay as metadata (a
    reversed row keeps its original's text: the ids are what it trains on).
    """
    check_columns(dataset, ("prompt", "completion"), "reversal_transform: token")
    ids = datasets.Sequence(datasets.Value("int32"))
    features = with_marker(datasets.Features({**dataset.features, "input_ids": ids, "completion_mask": ids}))
    parts = [
        map_batched(
            dataset,
            _tokenize_batch,
            features,
            fn_kwargs={"tokenizer": tokenizer, "reverse": reverse},
            num_proc=num_proc,
            desc="Tokenizing reversed rows" if reverse else "Tokenizing rows",
        )
        for reverse in (False, True)
    ]
    return datasets.concatenate_datasets(parts)
