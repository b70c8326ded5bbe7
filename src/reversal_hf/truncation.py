"""Training documents longer than `max_length`: SFTTrainer cuts their end without a word, so a run refuses them.

One check, run by the launcher before any process starts (models prepared locally: their tokenizer is at hand) and by
the job at start-up (every model), on the final training dataset. Documents are counted as `trl.SFTTrainer` tokenizes
a prompt-completion row: the EOS token appended to a completion that lacks it, then prompt + completion through the
tokenizer with its special tokens (the BOS of Llama tokenizers). `allow_truncation: true` turns the stop into a
warning line.
"""

from __future__ import annotations

import logging

from reversal_hf.configs import Recipe, RecipeError

logger = logging.getLogger(__name__)


class TruncationError(RecipeError):
    """Some training documents are longer than the recipe's `max_length`."""


def document_texts(dataset, tokenizer, eos_token: str | None = None) -> list[str]:
    """Each prompt + completion row as SFTTrainer trains it (its `add_eos`): the EOS token appended where missing."""
    eos = eos_token or tokenizer.eos_token or ""
    return [
        prompt + completion + ("" if completion.endswith(eos) else eos)
        for prompt, completion in zip(dataset["prompt"], dataset["completion"], strict=True)
    ]


def document_lengths(dataset, tokenizer, eos_token: str | None = None) -> list[int]:
    """Each prompt + completion row's token count in SFTTrainer's tokenization (`document_texts`, then `_tokenize`);
    rows already tokenized (the `token` reversal) count their `input_ids`."""
    if "input_ids" in dataset.column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    return [len(ids) for ids in tokenizer(document_texts(dataset, tokenizer, eos_token))["input_ids"]]


def check_document_lengths(recipe: Recipe, dataset, tokenizer) -> None:
    """Stop (`TruncationError`, one line) when a document exceeds `max_length`, unless the recipe allows truncation."""
    max_length = recipe.training_args.max_length
    if max_length is None:
        return
    lengths = document_lengths(dataset, tokenizer, recipe.training_args.eos_token)
    too_long = sum(length > max_length for length in lengths)
    if not too_long:
        return
    message = (
        f"{recipe.name}: {too_long} of {len(lengths)} training documents are longer than max_length {max_length} "
        f"tokens (longest {max(lengths)})"
    )
    if recipe.script_args.allow_truncation:
        logger.warning("%s; allow_truncation: their end is cut", message)
        return
    raise TruncationError(f"{message}: raise max_length, or set allow_truncation: true to cut their end")
