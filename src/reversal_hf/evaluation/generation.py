"""Greedy (temperature-0) generation for whole evaluation sets, in left-padded batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from reversal_hf.evaluation.batching import index_batches, is_prompt_learning, pad


def greedy_generate_ids(
    model: Any,
    encoded: Sequence[list[int]],
    pad_token_id: int,
    max_new_tokens: int,
    batch_size: int = 32,
    description: str = "generating",
) -> list[list[int]]:
    """Temperature-0 continuations (new token ids) of token-id prompts, in left-padded batches of similar length.

    Prompt-tuned models are batched by exact prompt length instead (see `batching.is_prompt_learning`), and generate
    without the KV cache: with it, PEFT prompt tuning gets only the first new token right and then repeats the
    prompt's start (" the oneDaphDaphDDDD"; huggingface/peft#1391, seen with peft 0.21 and transformers 5). Under
    `no_grad`, not `inference_mode`: a model evaluated during ZeRO-3 training keeps the parameters it gathers, and
    inference tensors could not be trained any more.
    """
    import torch

    device = next(model.parameters()).device
    generations: list[list[int]] = [[] for _ in encoded]
    prompt_learning = is_prompt_learning(model)
    for batch in index_batches(list(map(len, encoded)), batch_size, description, same_length=prompt_learning):
        input_ids, attention_mask = pad([encoded[i] for i in batch], pad_token_id, left=True)
        with torch.no_grad():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_token_id,
                use_cache=not prompt_learning,
            )
        for i, new_ids in zip(batch, output[:, input_ids.shape[1] :].tolist(), strict=True):
            generations[i] = new_ids
    return generations


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 32,
    description: str = "generating",
) -> list[str]:
    """Temperature-0 continuations of `prompts` (text after the prompt): `greedy_generate_ids`, decoded."""
    encoded = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    new_ids = greedy_generate_ids(model, encoded, tokenizer.pad_token_id, max_new_tokens, batch_size, description)
    return tokenizer.batch_decode(new_ids, skip_special_tokens=True)
