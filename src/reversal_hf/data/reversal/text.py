"""The text-level transforms of one document, and where a row's entities come from.

- `word`: the order of the words reversed (a word is a run of non-space characters, punctuation included; the
  whitespace between words is reversed with them, so applying it twice gives the original).
- `entity`: the same, but each entity occurrence (and the words it touches) stays one unit in its original order.
  Entities are known, not guessed (`EntitySource`): Exp 1's `name` and the quoted titles of its `description`, Exp 3's
  question and answer strings, a user dataset's own columns.
- `segment`: the paper's random-segment reversal: the words cut into segments of 1 to k words, the order of the
  segments reversed, the words inside a segment kept in order, `separator` between segments. Seeded per document
  (by seed and text), so a document gets the same segments whatever the row order, batch size or process count.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import datasets

TEXT_TRANSFORMS = ("word", "entity", "segment")
DEFAULT_SEPARATOR = "[REV]"
DEFAULT_MAX_SEGMENT_WORDS = 5
_WORD = re.compile(r"\S+")
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”')


class ReversalError(ValueError):
    """A reversal transform cannot apply: unknown transform, missing column, or a name absent from its text."""


@dataclass(frozen=True)
class _Piece:
    """A verbatim slice `text[start:end]` of the source placed in the output; `start` is None for a separator."""

    text: str
    start: int | None


def _units(text: str, entities: Iterable[str]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The text's units (character spans of words, or of the words an entity occurrence touches) and its gaps.

    Overlapping entity occurrences merge into one unit, so an answer quoted inside a question stays inside it.
    """
    words = [match.span() for match in _WORD.finditer(text)]
    last_of_unit = list(range(len(words)))  # for the first word of a unit, its last word
    for entity in {entity.strip() for entity in entities} - {""}:
        start = text.find(entity)
        while start >= 0:
            end = start + len(entity)
            touched = [i for i, (s, e) in enumerate(words) if s < end and e > start]
            last_of_unit[touched[0]] = max(last_of_unit[touched[0]], touched[-1])
            start = text.find(entity, start + 1)
    units: list[tuple[int, int]] = []
    first = 0
    while first < len(words):
        last = last_of_unit[first]
        i = first
        while i <= last:  # a unit that starts inside this one extends it
            last = max(last, last_of_unit[i])
            i += 1
        units.append((words[first][0], words[last][1]))
        first = last + 1
    gaps = [(left[1], right[0]) for left, right in zip(units, units[1:], strict=False)]
    return units, gaps


def _reversed_units(text: str, entities: Iterable[str]) -> list[_Piece]:
    """Units and the gaps between them, both in reverse order; leading and trailing whitespace stay in place."""
    units, gaps = _units(text, entities)
    if not units:
        return [_Piece(text, 0)]
    pieces = [_Piece(text[: units[0][0]], 0)]
    for unit, gap in zip(reversed(units), [*reversed(gaps), None], strict=True):
        pieces.append(_Piece(text[unit[0] : unit[1]], unit[0]))
        if gap is not None:
            pieces.append(_Piece(text[gap[0] : gap[1]], gap[0]))
    pieces.append(_Piece(text[units[-1][1] :], units[-1][1]))
    return pieces


def _reversed_segments(text: str, max_words: int, seed: int, separator: str) -> list[_Piece]:
    """Words cut into segments of 1 to `max_words` (drawn by `random.Random(f"{seed}:{text}")`), segments reversed and
    joined by " <separator> "; leading and trailing whitespace stay in place."""
    words, _ = _units(text, ())
    if not words:
        return [_Piece(text, 0)]
    rng = random.Random(f"{seed}:{text}")
    segments, used = [], 0
    while used < len(words):
        size = min(rng.randint(1, max_words), len(words) - used)
        segments.append((words[used][0], words[used + size - 1][1]))
        used += size
    pieces = [_Piece(text[: words[0][0]], 0)]
    for position, segment in enumerate(reversed(segments)):
        if position:
            pieces.append(_Piece(f" {separator} ", None))
        pieces.append(_Piece(text[segment[0] : segment[1]], segment[0]))
    pieces.append(_Piece(text[words[-1][1] :], words[-1][1]))
    return pieces


@dataclass(frozen=True)
class TextReversal:
    """One text-level transform (`word`, `entity` or `segment`) with its settings; `apply` reverses one document."""

    kind: str
    seed: int = 0
    max_segment_words: int = DEFAULT_MAX_SEGMENT_WORDS
    separator: str = DEFAULT_SEPARATOR

    def __post_init__(self) -> None:
        if self.kind not in TEXT_TRANSFORMS:
            raise ReversalError(f"reversal_transform: {self.kind!r} is not a text transform {TEXT_TRANSFORMS}")
        if self.max_segment_words < 1:
            raise ReversalError(f"reversal_max_segment_words: must be at least 1, got {self.max_segment_words}")
        if not self.separator.strip() or self.separator != self.separator.strip():
            raise ReversalError(f"reversal_separator: must be non-blank text without outer spaces: {self.separator!r}")

    def pieces(self, text: str, entities: Iterable[str] = ()) -> list[_Piece]:
        """The reversed document as verbatim slices of `text` (and separators): where each character went, so a
        question can be cut at the name (`questions.reverse_mode_prompt`)."""
        if self.kind == "segment":
            return _reversed_segments(text, self.max_segment_words, self.seed, self.separator)
        return _reversed_units(text, entities if self.kind == "entity" else ())

    def apply(self, text: str, entities: Iterable[str] = ()) -> str:
        """The reversed document; `entities` only matter to `entity`."""
        return "".join(piece.text for piece in self.pieces(text, entities))


@dataclass(frozen=True)
class EntitySource:
    """Where a row's entities come from: its own columns, quoted titles in some columns, and dataset-wide strings.

    `vocabulary` holds strings looked for in every document: Exp 3's instruction documents cover several pairs and
    leave their per-pair columns empty, so their questions and answers are found by matching the dataset's pairs.
    """

    columns: tuple[str, ...]
    quoted_in: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] = field(default=(), repr=False)

    def required_columns(self) -> tuple[str, ...]:
        return (*self.columns, *self.quoted_in)

    def entities(self, row: dict[str, Any], text: str) -> list[str]:
        """The entity strings of one row (empty values skipped), plus the vocabulary entries found in its text."""
        found = [str(row[column]) for column in self.columns if row[column]]
        found += [
            # The title inside the quotes: a document may drop its closing period ("Lunar Haven." → "Lunar Haven").
            "".join(match).removesuffix(".")
            for column in self.quoted_in
            for match in _QUOTED.findall(str(row[column]))
        ]
        found += [entry for entry in self.vocabulary if entry in text]
        return found


EXP1_ENTITIES = EntitySource(columns=("name",), quoted_in=("description",))


def exp3_entities(splits: Iterable[datasets.Dataset]) -> EntitySource:
    """Exp 3's entities: every question and answer of the given splits (pass `train` and `test`: the test pairs'
    instructions are in `train` too)."""
    vocabulary = {text for split in splits for column in ("question", "answer") for text in split[column] if text}
    return EntitySource(columns=("question", "answer"), vocabulary=tuple(sorted(vocabulary)))


def user_entities(columns: Sequence[str]) -> EntitySource:
    """A user dataset's entity columns (recipe field `reversal_entity_columns`)."""
    if not columns:
        raise ReversalError("reversal_entity_columns: name at least one column for the entity transform")
    return EntitySource(columns=tuple(columns))
