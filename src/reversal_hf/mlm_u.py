"""MLM-U (Kitouni et al. 2024, "The Factorization Curse", arXiv 2406.05183): masked language modelling with each
document's mask rate drawn from U(0, 1), the factorization-agnostic objective that paper proposes against the reversal
curse. `training_mode: mlm_u` trains a bidirectional masked LM (`models.save_random_masked_lm`) with
`transformers.Trainer`; `reversal_hf.evaluation.mlm_u` answers and scores with it.

What the paper specifies and we follow: a rate r ~ U(0, 1) per sequence, token-level masking (no whole words or
spans), the masked tokens replaced by the mask token (no BERT 80/10/10), and the loss of its eq. 5: each sequence's
mean negative log-likelihood over its masked tokens (the D/(D-t+1) weight of a permutation's last D-t+1 tokens),
averaged over sequences. Ours: the number masked is ceil(r * n) of the n maskable positions (at least one, as eq. 5's
t ≤ D), and every row has the fixed length `max_length`: the document, its EOS, then pad tokens that are predicted
like any other token. The pads are what lets a prompt be answered without knowing the answer's length: at inference
the row is the prompt followed by mask slots up to `max_length`, and the model fills the answer, the EOS and the pads
after it, as it did in training. Position 0 (BOS) is never masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from reversal_hf.configs import Recipe, RecipeError
from reversal_hf.truncation import document_texts

IGNORE_INDEX = -100


@dataclass
class MlmUCollator:
    """Rows of `length` tokens (the document, then `pad_token_id`), each with its own mask rate r ~ U(0, 1): a uniformly
    random ceil(r * n) of its n = `length` - 1 positions after BOS become `mask_token_id`; `labels` hold the original
    tokens there and -100 elsewhere. Random draws come from `generator` (default: torch's global one, which
    `Trainer` seeds and checkpoints)."""

    mask_token_id: int
    pad_token_id: int
    length: int
    generator: torch.Generator | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        documents = [list(example["input_ids"]) for example in examples]
        longest = max(map(len, documents), default=0)
        if not documents or longest > self.length:
            raise ValueError(f"MlmUCollator: documents of 1 to {self.length} tokens, got {longest or 'none'}")
        input_ids = torch.full((len(documents), self.length), self.pad_token_id, dtype=torch.long)
        for row, document in enumerate(documents):
            input_ids[row, : len(document)] = torch.tensor(document, dtype=torch.long)
        maskable = self.length - 1
        rates = torch.rand(len(documents), generator=self.generator)
        counts = torch.ceil(rates * maskable).clamp(min=1)
        # A uniformly random subset of `count` positions per row: those whose random key ranks below `count`.
        ranks = torch.rand(len(documents), maskable, generator=self.generator).argsort(dim=1).argsort(dim=1)
        masked = torch.zeros_like(input_ids, dtype=torch.bool)
        masked[:, 1:] = ranks < counts[:, None]
        return {
            "input_ids": input_ids.masked_fill(masked, self.mask_token_id),
            "attention_mask": torch.ones_like(input_ids),
            "labels": input_ids.masked_fill(~masked, IGNORE_INDEX),
        }


def mlm_u_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """The paper's eq. 5 (over the fixed row length D): each row's mean negative log-likelihood over its masked
    positions, averaged over the rows of the batch; a `Trainer` `compute_loss_func` (its token count is not used:
    rows, not tokens, are what is averaged)."""
    nll = torch.nn.functional.cross_entropy(
        outputs.logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = (labels != IGNORE_INDEX).sum(dim=1).clamp(min=1)
    return (nll.sum(dim=1) / counts).mean()


def documents_dataset(dataset, tokenizer, eos_token: str | None, length: int):
    """Each prompt + completion row as one document's `input_ids` (BOS, text, EOS as SFTTrainer would train it), cut at
    `length` (only reached with `allow_truncation`: otherwise `truncation` has stopped the run)."""
    from datasets import Dataset

    texts = document_texts(dataset, tokenizer, eos_token)
    return Dataset.from_dict({"input_ids": tokenizer(texts, truncation=True, max_length=length)["input_ids"]})


def mlm_u_trainer(recipe: Recipe, model_path: str, tokenizer: Any, dataset: Any, callbacks: list | None):
    """A `transformers.Trainer` for MLM-U on the recipe's documents: the masked LM at `model_path`, rows of the
    recipe's `max_length`, the `MlmUCollator` and `mlm_u_loss`.

    The tokenizer's `model_max_length` is set to the row length, so the saved run tells its runner how long a row is.
    The loss is a mean over rows, so `Trainer` divides it for gradient accumulation and does not rescale it by the
    token count across devices (DDP averages the ranks' gradients)."""
    from transformers import AutoModelForMaskedLM, Trainer

    args = recipe.training_args
    if args.max_length is None:
        raise RecipeError(f"{recipe.name}: max_length: training_mode mlm_u needs the row length")
    not_masked_lm = RecipeError(f"model_name_or_path: {model_path} is not a masked LM with a mask token (mlm_u)")
    if tokenizer.mask_token_id is None:
        raise not_masked_lm
    try:
        model = AutoModelForMaskedLM.from_pretrained(model_path, **(args.model_init_kwargs or {}))
    except ValueError as error:  # a config without a masked-LM class (a causal LM)
        raise not_masked_lm from error
    tokenizer.model_max_length = args.max_length
    args.average_tokens_across_devices = False
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=documents_dataset(dataset, tokenizer, args.eos_token, args.max_length),
        data_collator=MlmUCollator(tokenizer.mask_token_id, tokenizer.pad_token_id, args.max_length),
        processing_class=tokenizer,
        compute_loss_func=mlm_u_loss,
        callbacks=callbacks,
    )
    trainer.loss_is_scaled_for_ga = False
    return trainer
