"""Reverse-mode questions (evaluation mode 2): a held-out name-first fact transformed as in training and cut before
the name, the name being the answer; in text for the text transforms, in token ids for `token`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from reversal_hf.data.reversal.text import EntitySource, ReversalError, TextReversal
from reversal_hf.data.reversal.tokens import reverse_token_ids


def reverse_mode_prompt(text: str, name: str, reversal: TextReversal, entities: Iterable[str] = ()) -> tuple[str, str]:
    """A reverse-mode question: `text` (a fact in a held-out name-first template) transformed, cut before the name.

    Returns (prompt, completion) with `prompt + completion` a prefix of the transformed text: the completion runs from
    the whitespace before the first character of the name to its last one (for `word`, "Barrington, Daphne"; for
    `segment`, whatever the segments put between the name's pieces). The name is always an entity.
    """
    start = text.find(name) if name else -1
    if start < 0:
        raise ReversalError(f"name {name!r} is not in the text {text!r}")
    end = start + len(name)
    pieces = reversal.pieces(text, [name, *entities])
    transformed = "".join(piece.text for piece in pieces)
    name_positions, offset = [], 0
    for piece in pieces:
        if piece.start is not None:
            name_positions += [
                offset + i for i, char in enumerate(piece.text) if start <= piece.start + i < end and not char.isspace()
            ]
        offset += len(piece.text)
    prompt = transformed[: name_positions[0]].rstrip()
    if not prompt:
        raise ReversalError(f"nothing precedes {name!r} once reversed: {transformed!r} (not a name-first text?)")
    return prompt, transformed[len(prompt) : name_positions[-1] + 1]


def reverse_mode_questions(
    rows: Iterable[dict[str, Any]], reversal: TextReversal, entity_source: EntitySource | None = None
) -> list[dict[str, Any]]:
    """Evaluation mode 2 on Exp 1 rows: each name-first (`direction` p2d) row with its `prompt` and `completion`
    replaced by its reverse-mode question (`reverse_mode_prompt`); rows in the other order are left out."""
    questions = []
    for row in rows:
        if row["direction"] == "p2d":
            text = row["prompt"] + row["completion"]
            entities = entity_source.entities(row, text) if entity_source else ()
            prompt, completion = reverse_mode_prompt(text, row["name"], reversal, entities)
            questions.append({**row, "prompt": prompt, "completion": completion})
    return questions


def token_reverse_mode_question(text: str, name: str, tokenizer: Any) -> tuple[list[int], list[int]]:
    """A reverse-mode question for `token`, in token ids: `text` (a name-first fact) tokenized as training tokenizes
    it (EOS appended), reversed by `reverse_token_ids` and cut before the name's first token.

    Returns (prompt ids, completion ids), the completion being the name's tokens in reversed order. Ids, not text:
    decoding reversed ids and encoding the result again would give other ids than the ones the model trained on.
    """
    start = text.find(name) if name else -1
    if start < 0:
        raise ReversalError(f"name {name!r} is not in the text {text!r}")
    end = start + len(name)
    encoding = tokenizer(text + (tokenizer.eos_token or ""), return_offsets_mapping=True)
    ids, offsets = encoding["input_ids"], encoding["offset_mapping"]
    special_ids = set(tokenizer.all_special_ids)
    order = reverse_token_ids(range(len(ids)), {i for i, token in enumerate(ids) if token in special_ids})
    in_name = [ids[i] not in special_ids and offsets[i][0] < end and offsets[i][1] > start for i in order]
    first, last = in_name.index(True), len(in_name) - in_name[::-1].index(True)
    reversed_ids = [ids[i] for i in order]
    if all(token in special_ids for token in reversed_ids[:first]):
        raise ReversalError(f"no token precedes {name!r} once reversed: {text!r} (not a name-first text?)")
    return reversed_ids[:first], reversed_ids[first:last]
