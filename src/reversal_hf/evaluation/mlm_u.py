"""An MLM-U model (`training_mode: mlm_u`, `reversal_hf.mlm_u`) behind the `Runner` seam: the evaluators ask it the
same questions and score its answers with the same exact-match rule as a causal model's.

A row is always the length the model was trained on (its tokenizer's `model_max_length`): the prompt, then mask
slots to the end of the row. Answers are decoded left to right, as the Factorization Curse paper decodes (its App. G:
"all inference is performed in left-to-right AR fashion"): the leftmost slot is filled with its most likely token,
one slot per forward pass, until the model writes the end token (EOS, or a pad); the answer is the text before it.
The number of slots is what the row leaves after the prompt, whatever the references are, so an answer's length
never comes from the gold answer. The log-probability of a completion is the chain rule in the same order: the sum
over its tokens of log p(token | prompt, the completion's tokens before it, every later slot masked).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any

from reversal_hf.evaluation.batching import index_batches, once_each
from reversal_hf.evaluation.errors import EvaluationError, SamplingNeedsAnEndpointError
from reversal_hf.evaluation.scoring import _completion_ids

# Rows per forward pass when scoring: one per completion token, each as long as a short prompt, so many fit at once.
SCORING_ROWS_PER_PROMPT = 8


@dataclass
class MaskedLMRunner:
    """Generation by left-to-right unmasking and chain-rule scores, for whole evaluation sets (duplicates once)."""

    model: Any
    tokenizer: Any
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.length = int(self.tokenizer.model_max_length)
        if self.tokenizer.mask_token_id is None or self.length > self.model.config.max_position_embeddings:
            raise EvaluationError(
                "not an MLM-U model: its tokenizer needs a mask token and model_max_length set to its training rows"
            )
        self.end_ids = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        """The answer to each prompt, the slots after it filled left to right up to the end token. `max_new_tokens`
        (which evaluators derive from the references) is not used: the slots are the rest of the row."""
        return once_each(list(prompts), lambda unique: self._unmask([self._prompt_ids(prompt) for prompt in unique]))

    def scores(
        self, prompts: Sequence[str], completions: Sequence[str], deduplicate: bool = True
    ) -> list[tuple[float, int]]:
        """(summed log-prob, token count) of each completion given its prompt, by the chain rule left to right.
        Each row is scored on its own, so `deduplicate` changes the work done, never a score."""
        pairs = list(zip(prompts, completions, strict=True))
        return once_each(pairs, self._chain_rule) if deduplicate else self._chain_rule(pairs)

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Mean per-token negative log-likelihood of each completion given its prompt."""
        return [-total / count for total, count in self.scores(prompts, completions)]

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sample(self, conversations: Sequence[list[dict[str, str]]], samples: int, **sampling: Any) -> list[list[str]]:
        raise SamplingNeedsAnEndpointError("an MLM-U model")

    def _prompt_ids(self, prompt: str) -> list[int]:
        ids = self.tokenizer(prompt)["input_ids"]
        if len(ids) >= self.length:
            raise EvaluationError(f"prompt of {len(ids)} tokens leaves no slot in the model's {self.length}-token rows")
        return ids

    def _logits(self, rows: Any) -> Any:
        import torch

        with torch.no_grad():
            return self.model(input_ids=rows.to(self.model.device)).logits.float().cpu()

    def _unmask(self, encoded: list[list[int]]) -> list[str]:
        import torch

        mask = self.tokenizer.mask_token_id
        answers = [""] * len(encoded)
        for batch in index_batches(list(map(len, encoded)), self.batch_size, "unmasking"):
            rows = torch.tensor([encoded[i] + [mask] * (self.length - len(encoded[i])) for i in batch])
            positions = torch.tensor([len(encoded[i]) for i in batch])
            running = torch.ones(len(batch), dtype=torch.bool)
            while running.any():
                logits = self._logits(rows)[torch.arange(len(batch)), positions.clamp(max=self.length - 1)]
                logits[:, mask] = float("-inf")
                filled = logits.argmax(dim=-1)
                active = running.nonzero().squeeze(1)
                rows[active, positions[active]] = filled[active]
                ended = torch.tensor([token in self.end_ids for token in filled.tolist()])
                positions = positions + running.long()
                running &= ~ended & (positions < self.length)
            for row, i in enumerate(batch):
                answers[i] = self._answer(rows[row, len(encoded[i]) :].tolist())
        return answers

    def _answer(self, slots: list[int]) -> str:
        """The text of the filled slots before the end token (or unfilled slots, where the row ran out)."""
        stop = self.end_ids | {self.tokenizer.mask_token_id}
        end = next((index for index, token in enumerate(slots) if token in stop), len(slots))
        return self.tokenizer.decode(slots[:end], skip_special_tokens=True)

    def _rows(self, pairs: list[tuple[str, str]]) -> Iterator[tuple[int, list[int], int, int]]:
        """(pair index, row, position, target) for each completion token: the row holds the prompt and the
        completion's earlier tokens, every position from `position` on masked."""
        mask = self.tokenizer.mask_token_id
        for index, (prompt, completion) in enumerate(pairs):
            ids, start = _completion_ids(self.tokenizer, prompt, completion)
            if len(ids) > self.length:
                raise EvaluationError(
                    f"prompt {prompt!r} + completion {completion!r} is {len(ids)} tokens, longer than the model's "
                    f"{self.length}-token rows"
                )
            for position in range(start, len(ids)):
                yield index, ids[:position] + [mask] * (self.length - position), position, ids[position]

    def _chain_rule(self, pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
        import torch

        totals, counts = [0.0] * len(pairs), [0] * len(pairs)
        rows = self._rows(pairs)
        while chunk := list(islice(rows, self.batch_size * SCORING_ROWS_PER_PROMPT)):
            logits = self._logits(torch.tensor([row for _, row, _, _ in chunk]))
            at = logits[torch.arange(len(chunk)), torch.tensor([position for _, _, position, _ in chunk])]
            logprobs = at.log_softmax(dim=-1)[torch.arange(len(chunk)), torch.tensor([t for *_, t in chunk])]
            for (index, *_), logprob in zip(chunk, logprobs.tolist(), strict=True):
                totals[index] += logprob
                counts[index] += 1
        return list(zip(totals, counts, strict=True))
