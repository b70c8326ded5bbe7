"""Batches of requests for generation and scoring: each distinct request once (`once_each`, `largest_budgets`),
padded tensors, and index batches of similar length."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from huggingface_hub.utils import tqdm

from reversal_hf.evaluation.errors import EvaluationError

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def largest_budgets(prompts: Sequence[str], max_new_tokens: Sequence[int]) -> dict[str, int]:
    """Each distinct prompt with the largest token budget it is asked with (generated once with that)."""
    budgets: dict[str, int] = {}
    for prompt, budget in zip(prompts, max_new_tokens, strict=True):
        budgets[prompt] = max(budgets.get(prompt, 0), budget)
    return budgets


def once_each(items: Sequence[K], compute: Callable[[list[K]], list[V]]) -> list[V]:
    """`compute` over the distinct items only (first-seen order), its answers given back for every item."""
    unique = list(dict.fromkeys(items))
    by_item = dict(zip(unique, compute(unique), strict=True))
    return [by_item[item] for item in items]


def pad(sequences: Sequence[list[int]], pad_id: int, left: bool) -> tuple[Any, Any]:
    """Padded input ids and attention mask as tensors."""
    import torch

    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def index_batches(lengths: Sequence[int], batch_size: int, description: str, same_length: bool = False) -> Any:
    """Index batches, longest first (similar lengths pad little); `same_length` batches need no padding at all.

    The progress bar shows in log files too (a long evaluation under `nohup` is otherwise silent for minutes), and
    follows the Hub's switch, `HF_HUB_DISABLE_PROGRESS_BARS=1`, as transformers' loading and Hub download bars do."""
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: dict[int, list[int]] = defaultdict(list)
    for i in order:
        groups[lengths[i] if same_length else 0].append(i)
    batches = [
        group[start : start + batch_size] for group in groups.values() for start in range(0, len(group), batch_size)
    ]
    return tqdm(batches, desc=description, unit="batch")


def is_prompt_learning(model: Any) -> bool:
    """PEFT prompt tuning prepends virtual tokens and ignores position ids, so left padding would shift positions."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))
