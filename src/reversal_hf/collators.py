"""Padding-free batching that keeps every training document in its own attention context.

The documents are one short sentence each (~30 tokens), so padding a batch to its longest member wastes much of the
compute. `PaddingFreeCollator` concatenates a batch into rows and restarts `position_ids` at 0 for every document;
transformers' mask code (`masking_utils.find_packed_sequence_indices`) turns those restarts into a block-diagonal
causal mask, and FlashAttention-2 varlen into `cu_seqlens`.

What was verified on CPU (transformers 5.24, TRL 1.16, Llama with `sdpa` and `eager`; see tests/test_collators.py):
- with `position_ids` and no `attention_mask`, each document's logits in a packed row equal its logits alone
  (max difference ~2e-7 in float32), also through `SFTTrainer` with this collator and with TRL's own;
- two traps make documents attend across boundaries while the loss still falls: passing a 2D all-ones
  `attention_mask` (the packed-row detection only runs without one), and running with a KV cache (`use_cache` is
  true in most model configs, and detection also only runs without a cache). `SFTTrainer.compute_loss` passes
  `use_cache=False`; anything else that runs packed rows must do the same.

TRL's own padding-free path (`SFTConfig(padding_free=True)`, TRL 1.16) isolates documents the same way: its
`DataCollatorForLanguageModeling` concatenates the *whole batch into one row*, restarts `position_ids` per
document, sets each document's first label to -100, and adds `cu_seq_lens_*`, `max_length_*` and `seq_idx` for
varlen kernels (SDPA and eager ignore them and rely on `position_ids`). It needs `max_length=None` unless packing is
on, and refuses a custom collator; despite `SFTConfig`'s help ("only supported with FlashAttention 2 or 3") it works
with SDPA and eager on CPU, without a warning. Neither collator groups documents by length; the difference is the
row: SDPA and eager attend over a dense mask of the whole row, so TRL's one row of 64 x 27 tokens costs the tiny
Llama more than padding does; this collator's rows of <= 256 tokens trained it 1.55x as fast as TRL's path on an
idle machine (bench/README.md).
On SmolLM2-135M (bf16 on CPU, batch 16, MLP-bound) TRL's single row was faster, so the tiny recipes use this
collator (`isolated_padding_free: true`) and the SmolLM2 recipes TRL's (`padding_free: true`);
`reversal_hf.train` runs `assert_document_isolation` before training with either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

IGNORE_INDEX = -100


class DocumentIsolationError(RuntimeError):
    """A document's logits changed when it was packed with others: tokens attend across document boundaries."""


@dataclass
class PaddingFreeCollator:
    """Concatenate tokenized documents into rows of restarting `position_ids`, without an attention mask.

    Each example needs `input_ids` and may carry `labels` (TRL's prepared datasets hold `labels` with -100 on prompt
    tokens when `completion_only_loss` is on); without `labels` every token is a target. The label of each document's
    first token is set to -100 so that no document learns to predict the next one's start.

    Documents fill rows of at most `max_row_tokens` tokens in order (a longer document gets a row of its own). SDPA
    and eager attention build a dense mask over a whole row, so one 2,000-token row costs more attention than the
    documents need; rows of ~256 tokens were fastest on CPU (bench/README.md). `None` packs everything into one row,
    the right choice for FlashAttention-2 varlen, whose cost doesn't grow with the row. Shorter rows, and every row
    when `pad_to_multiple_of` is set, end with one dummy document (pad tokens, positions 0..k-1, labels -100), so
    that all rows share one width and only a few distinct shapes occur, as torch.compile and CUDA graphs need.
    """

    pad_token_id: int
    max_row_tokens: int | None = 256
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("PaddingFreeCollator got an empty batch")
        rows = self._fill_rows([self._document(index, example) for index, example in enumerate(examples)])
        width = max(sum(len(ids) for ids, _ in row) for row in rows)
        if self.pad_to_multiple_of:
            width += -width % self.pad_to_multiple_of
        input_ids, labels, position_ids = [], [], []
        for row in rows:
            padding = width - sum(len(ids) for ids, _ in row)
            if padding:
                dummy = torch.full((padding,), self.pad_token_id, dtype=torch.long)
                row = [*row, (dummy, torch.full_like(dummy, IGNORE_INDEX))]
            input_ids.append(torch.cat([ids for ids, _ in row]))
            labels.append(torch.cat([targets for _, targets in row]))
            position_ids.append(torch.cat([torch.arange(len(ids)) for ids, _ in row]))
        return {
            "input_ids": torch.stack(input_ids),
            "labels": torch.stack(labels),
            "position_ids": torch.stack(position_ids),
        }

    @staticmethod
    def _document(index: int, example: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.as_tensor(example["input_ids"], dtype=torch.long)
        targets = torch.as_tensor(example.get("labels", ids), dtype=torch.long).clone()
        if ids.ndim != 1 or len(ids) == 0:
            raise ValueError(f"example {index}: `input_ids` must be a non-empty list of token ids")
        if targets.shape != ids.shape:
            raise ValueError(f"example {index}: `labels` has {len(targets)} entries, `input_ids` has {len(ids)}")
        targets[0] = IGNORE_INDEX
        return ids, targets

    def _fill_rows(self, documents: list[tuple[torch.Tensor, torch.Tensor]]) -> list[list]:
        rows: list[list] = [[]]
        used = 0
        for document in documents:
            if rows[-1] and self.max_row_tokens and used + len(document[0]) > self.max_row_tokens:
                rows.append([])
                used = 0
            rows[-1].append(document)
            used += len(document[0])
        return rows


def document_spans(position_ids: torch.Tensor) -> list[tuple[int, int, int]]:
    """`(row, start, end)` of each document in a batch of packed rows, read from where `position_ids` restart."""
    spans = []
    for row, positions in enumerate(position_ids.reshape(-1, position_ids.shape[-1])):
        starts = (torch.nonzero(positions[1:] != positions[:-1] + 1).flatten() + 1).tolist()
        bounds = [0, *starts, len(positions)]
        spans.extend((row, begin, end) for begin, end in zip(bounds[:-1], bounds[1:], strict=True))
    return spans


@torch.no_grad()
def assert_document_isolation(
    model: torch.nn.Module, collator: Any, examples: Sequence[dict[str, Any]], atol: float | None = None
) -> float:
    """Check that every document's logits in the collated batch equal its logits computed alone.

    Call it once before training, with a few real examples and the collator the trainer uses: the model runs the
    packed batch exactly as `SFTTrainer.compute_loss` does (`use_cache=False`). Documents are found in the batch in
    order by their tokens (padding in between is skipped). Returns the largest difference; raises
    `DocumentIsolationError` above `atol` (1e-4 for float32, 5e-2 for half precision, where kernels differ).
    """
    if atol is None:
        atol = 1e-4 if next(model.parameters()).dtype == torch.float32 else 5e-2
    was_training = model.training
    matmul_precision = torch.backends.cuda.matmul.fp32_precision  # the backend's own API: Trainer sets it on a GPU
    model.eval()
    # The mask is what is checked, so float32 matmuls stay exact and attention takes the math kernel: with the default
    # kernels an H200 put 2e-3 (135M shape) to 1e-2 (1B shape) between a packed row and a lone document (2026-11-26).
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    try:
        with sdpa_kernel(SDPBackend.MATH):
            batch = {
                key: value.to(model.device) if isinstance(value, torch.Tensor) else value
                for key, value in collator(list(examples)).items()
                if key != "labels"
            }
            packed = model(**batch, use_cache=False).logits
            pending = [torch.as_tensor(example["input_ids"], device=model.device) for example in examples]
            worst = 0.0
            for row, start, end in document_spans(batch["position_ids"]):
                if pending and torch.equal(batch["input_ids"][row, start:end], pending[0]):
                    alone = model(input_ids=pending.pop(0)[None], use_cache=False).logits[0]
                    worst = max(worst, (packed[row, start:end] - alone).abs().max().item())
    finally:
        model.train(was_training)
        torch.backends.cuda.matmul.fp32_precision = matmul_precision
    if pending:
        raise DocumentIsolationError(f"{len(pending)} of {len(examples)} documents not found intact in the batch")
    if worst > atol:
        raise DocumentIsolationError(
            f"packed documents attend across boundaries: logits differ by {worst:.3g} from the documents alone "
            f"(atol {atol:g}); pass `position_ids` without `attention_mask` and run with `use_cache=False`"
        )
    return worst
