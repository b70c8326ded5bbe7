"""Log-probabilities of completions given prompts: one forward pass per batch, a prefix that every sequence shares
(such as a few-shot transcript) computed once and its keys and values reused by every batch.

Forward passes run under `no_grad`, not `inference_mode`, as `generation` explains."""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any

from reversal_hf.evaluation.batching import index_batches, is_prompt_learning, pad
from reversal_hf.evaluation.errors import EvaluationError

# A shared prompt prefix shorter than this costs less to recompute than to copy as keys and values into every batch.
PREFIX_CACHE_MIN_TOKENS = 32


def _completion_ids(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of prompt + completion, and where the completion starts.

    The completion is the suffix after the longest common prefix with the prompt's own tokens, so a token merged
    across the boundary counts as completion (it cannot be scored given a prompt that does not contain it).
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + completion)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    start = max(start, 1)  # the first token has no context to be scored from
    if start >= len(full_ids):
        raise EvaluationError(f"completion {completion!r} adds no tokens to prompt {prompt!r}")
    return full_ids, start


def _shared_prefix_length(model: Any, encoded: Sequence[tuple[list[int], int]], enabled: bool) -> int:
    """How many leading tokens all sequences share, ending a token or more before every completion so that each
    completion is scored from the logits of the batch pass; 0 where a cache would not pay off or not apply.

    Prompt-tuned models are excluded: their virtual tokens must come before the prefix, in the same forward pass.
    """
    if not enabled or len(encoded) < 2 or is_prompt_learning(model):
        return 0
    common = len(os.path.commonprefix([ids for ids, _ in encoded]))
    length = min(common, min(start for _, start in encoded) - 1)
    return length if length >= PREFIX_CACHE_MIN_TOKENS else 0


def _prefix_cache(model: Any, prefix_ids: list[int]) -> Any:
    """The keys and values of `prefix_ids` for a batch of one, computed once and copied for every batch."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    device = next(model.parameters()).device
    with torch.no_grad():
        model(input_ids=torch.tensor([prefix_ids], device=device), cache=cache, use_cache=True)
    return cache


def _logits(model: Any, input_ids: Any, attention_mask: Any, prefix: Any, prefix_length: int) -> Any:
    """Logits of a right-padded batch, continuing the cached `prefix` (of `prefix_length` tokens) when given."""
    import torch

    with torch.no_grad():
        if prefix is None:
            return model(input_ids=input_ids, attention_mask=attention_mask).logits
        rows, width = input_ids.shape
        cache = copy.deepcopy(prefix)  # the forward pass appends to its cache: the stored prefix must stay as it is
        cache.batch_repeat_interleave(rows)
        full_mask = torch.cat([attention_mask.new_ones((rows, prefix_length)), attention_mask], dim=1)
        positions = torch.arange(prefix_length, prefix_length + width, device=input_ids.device).expand(rows, -1)
        return model(
            input_ids=input_ids, attention_mask=full_mask, position_ids=positions, cache=cache, use_cache=True
        ).logits


def score_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 32,
    description: str = "scoring",
    prefix_cache: bool = True,
) -> list[tuple[float, int]]:
    """(summed log-prob, token count) of each completion given its prompt: `score_token_completions` of the texts'
    tokens, the completion starting where its tokens part from the prompt's own."""
    if len(prompts) != len(completions):
        raise EvaluationError(f"{len(prompts)} prompts but {len(completions)} completions")
    encoded = [_completion_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    return score_token_completions(model, encoded, tokenizer.pad_token_id, batch_size, description, prefix_cache)


def score_token_completions(
    model: Any,
    encoded: Sequence[tuple[list[int], int]],
    pad_token_id: int,
    batch_size: int = 32,
    description: str = "scoring",
    prefix_cache: bool = True,
) -> list[tuple[float, int]]:
    """(summed log-prob, token count) of each sequence's tokens from its `start` on, one forward pass per batch.

    With `prefix_cache`, a token prefix that all sequences share (such as a few-shot transcript) runs once and
    every batch runs only the rest on its keys and values; sequences are split in tokens, so scores are unchanged.
    """
    prefix_length = _shared_prefix_length(model, encoded, prefix_cache)
    prefix = _prefix_cache(model, encoded[0][0][:prefix_length]) if prefix_length else None
    device = next(model.parameters()).device
    scores: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for batch in index_batches([len(ids) - prefix_length for ids, _ in encoded], batch_size, description):
        rest = [encoded[i][0][prefix_length:] for i in batch]
        input_ids, attention_mask = pad(rest, pad_token_id, left=False)
        logits = _logits(model, input_ids.to(device), attention_mask.to(device), prefix, prefix_length)
        # Prompt tuning prepends virtual tokens: keep the positions of the real ones.
        logits = logits[:, -input_ids.shape[1] :].float()
        token_logprobs = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None].to(device))[..., 0]
        for row, i in enumerate(batch):
            full_ids, start = encoded[i]
            values = token_logprobs[row, start - prefix_length - 1 : len(full_ids) - prefix_length - 1]
            scores[i] = (float(values.sum()), len(values))
    return scores


def completion_logprobs(
    model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], **options: Any
) -> list[float]:
    """Summed log-probability of each completion's tokens given its prompt: `score_completions` (same `options`:
    batch_size, description, prefix_cache) without the token counts."""
    return [total for total, _ in score_completions(model, tokenizer, prompts, completions, **options)]
