"""Reverse training (Golovneva, Allen-Zhu, Weston, Sukhbaatar 2024, "Reverse Training to Nurse the Reversal Curse").

Every training document is used twice: once as written, once reversed. A reverse-trained dataset holds the original
rows (`reversed` False, untouched) followed by one reversed row per original (`reversed` True), so training on it is
the data-matched comparison and the baseline with twice the epochs the compute-matched one. Transforms:

- `word`: the order of the words reversed (a word is a run of non-space characters, punctuation included; the
  whitespace between words is reversed with them, so applying it twice gives the original).
- `entity`: the same, but each entity occurrence (and the words it touches) stays one unit in its original order.
  Entities are known, not guessed (`EntitySource`): Exp 1's `name` and the quoted titles of its `description`, Exp 3's
  question and answer strings, a user dataset's own columns.
- `segment`: the paper's random-segment reversal: the words cut into segments of 1 to k words, the order of the
  segments reversed, the words inside a segment kept in order, `separator` between segments. Seeded per document
  (by seed and text), so a document gets the same segments whatever the row order, batch size or process count.
- `token`: the token sequence reversed at tokenization (`reverse_token_ids`, `add_reversed_token_rows`).
- `both_orders`: not a fix but the oracle control: each fact also written in the other order with the held-in
  templates, the way the paper built its `both` subset (`add_other_order_rows`).

A reversed row is one document of plain LM loss, as the paper trains it: `prompt` is "" and `completion` the whole
reversed text of `prompt + completion`. TRL's `SFTTrainer` takes such prompt-completion rows as they are (Exp 3 already
trains on rows with an empty prompt): the prompt tokenizes to BOS alone, so even with `completion_only_loss` the loss
covers the whole reversed document. A reversed row keeps every other column of its original (`name`, `direction`...),
so it never carries another fact's text and Exp 1's leak check still reads each row's fact and template direction.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from reversal_hf.data.exp1_generate import read_generation_templates
from reversal_hf.data.exp1_paper import TEMPLATES_DIR
from reversal_hf.data.exp1_schema import TRAIN_SPLIT, TRAIN_TEMPLATES, Splits
from reversal_hf.data.paraphrase import DIRECTIONS, FitRequest, OfflineParaphraser, Paraphraser, Template

TEXT_TRANSFORMS = ("word", "entity", "segment")
TRANSFORMS = (*TEXT_TRANSFORMS, "token", "both_orders")
REVERSED_COLUMN = "reversed"
DEFAULT_SEPARATOR = "[REV]"
DEFAULT_MAX_SEGMENT_WORDS = 5
_WORD = re.compile(r"\S+")
_QUOTED = re.compile(r'"([^"]+)"|“([^”]+)”')


class ReversalError(ValueError):
    """A reversal transform cannot apply: unknown transform, missing column, or a name absent from its text."""


# ---------------------------------------------------------------- text level


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

    def _pieces(self, text: str, entities: Iterable[str] = ()) -> list[_Piece]:
        if self.kind == "segment":
            return _reversed_segments(text, self.max_segment_words, self.seed, self.separator)
        return _reversed_units(text, entities if self.kind == "entity" else ())

    def apply(self, text: str, entities: Iterable[str] = ()) -> str:
        """The reversed document; `entities` only matter to `entity`."""
        return "".join(piece.text for piece in self._pieces(text, entities))


def reverse_words(text: str) -> str:
    """`word`: "Daphne Barrington directed it." → "it. directed Barrington Daphne"."""
    return TextReversal("word").apply(text)


def reverse_words_keeping_entities(text: str, entities: Iterable[str]) -> str:
    """`entity`: "Daphne Barrington directed it." with entity "Daphne Barrington" → "it. directed Daphne Barrington"."""
    return TextReversal("entity").apply(text, entities)


def reverse_segments(
    text: str, max_words: int = DEFAULT_MAX_SEGMENT_WORDS, seed: int = 0, separator: str = DEFAULT_SEPARATOR
) -> str:
    """`segment`: random segments of 1 to `max_words` words in reverse order, joined by `separator`."""
    return TextReversal("segment", seed, max_words, separator).apply(text)


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
    pieces = reversal._pieces(text, [name, *entities])
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


# ---------------------------------------------------------------- entities


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


# ---------------------------------------------------------------- dataset level


def _check_columns(dataset: datasets.Dataset, needed: Iterable[str], what: str) -> None:
    missing = [column for column in needed if column not in dataset.column_names]
    if missing:
        raise ReversalError(f"{what}: the dataset has no column {missing[0]!r} (columns: {dataset.column_names})")
    if REVERSED_COLUMN in dataset.column_names:
        raise ReversalError(f"{what}: the dataset already has a {REVERSED_COLUMN!r} column (reversed twice?)")


def _rows(batch: dict[str, list]) -> Iterator[dict[str, Any]]:
    return (dict(zip(batch, values, strict=True)) for values in zip(*batch.values(), strict=True))


def _reverse_batch(batch: dict[str, list], reversal: TextReversal, entity_source: EntitySource | None) -> dict:
    texts = [prompt + completion for prompt, completion in zip(batch["prompt"], batch["completion"], strict=True)]
    if entity_source is None:
        reversed_texts = [reversal.apply(text) for text in texts]
    else:
        rows = zip(_rows(batch), texts, strict=True)
        reversed_texts = [reversal.apply(text, entity_source.entities(row, text)) for row, text in rows]
    return {**batch, "prompt": [""] * len(texts), "completion": reversed_texts, REVERSED_COLUMN: [True] * len(texts)}


def _mark_originals(batch: dict[str, list]) -> dict:
    return {REVERSED_COLUMN: [False] * len(next(iter(batch.values())))}


def _with_marker(features: datasets.Features) -> datasets.Features:
    return datasets.Features({**features, REVERSED_COLUMN: datasets.Value("bool")})


def _map(
    dataset: datasets.Dataset, function: Callable[..., dict], features: datasets.Features, **kwargs: Any
) -> datasets.Dataset:
    """Batched `Dataset.map`, never read from the cache: these maps are cheap, and the cache fingerprint does not
    hash this module's code, so a cached result would outlive a change to it."""
    return dataset.map(function, batched=True, features=features, load_from_cache_file=False, **kwargs)


def _marked_originals(dataset: datasets.Dataset, features: datasets.Features) -> datasets.Dataset:
    return _map(dataset, _mark_originals, features, desc="Marking original rows")


def add_reversed_rows(
    dataset: datasets.Dataset,
    reversal: TextReversal,
    entity_source: EntitySource | None = None,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """The original rows, then each row's text reversed as one empty-prompt document (`word`, `entity`, `segment`)."""
    if reversal.kind == "entity" and entity_source is None:
        raise ReversalError("reversal_transform: entity needs the dataset's entities (an EntitySource)")
    entity_source = entity_source if reversal.kind == "entity" else None
    needed = ("prompt", "completion", *(entity_source.required_columns() if entity_source else ()))
    _check_columns(dataset, needed, f"reversal_transform: {reversal.kind}")
    features = _with_marker(dataset.features)
    reversed_rows = _map(
        dataset,
        _reverse_batch,
        features,
        fn_kwargs={"reversal": reversal, "entity_source": entity_source},
        num_proc=num_proc,
        desc=f"Reversing documents ({reversal.kind})",
    )
    return datasets.concatenate_datasets([_marked_originals(dataset, features), reversed_rows])


# ---------------------------------------------------------------- token level


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
    _check_columns(dataset, ("prompt", "completion"), "reversal_transform: token")
    ids = datasets.Sequence(datasets.Value("int32"))
    features = _with_marker(datasets.Features({**dataset.features, "input_ids": ids, "completion_mask": ids}))
    parts = [
        _map(
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


# ---------------------------------------------------------------- both orders (the oracle control)


def held_in_templates(templates_dir: Path = TEMPLATES_DIR) -> dict[str, list[Template]]:
    """Templates 0-29 of each direction: the ones Exp 1 trains on (30-39 are held out for testing)."""
    return {
        direction: read_generation_templates(templates_dir / f"{direction}_templates.txt", direction)[:TRAIN_TEMPLATES]
        for direction in DIRECTIONS
    }


def add_other_order_rows(
    dataset: datasets.Dataset,
    templates: dict[str, list[Template]] | None = None,
    paraphraser: Paraphraser | None = None,
) -> datasets.Dataset:
    """`both_orders`: the original rows, then each fact written in every held-in template of the order it lacks.

    As the paper's `both` subset: a fact trained in one order gets one row per held-in template of the other (its
    source `description` fitted into the template by `paraphraser`, offline by default); a fact already in both
    orders gets nothing. The new rows keep the fact's `subset`, so Exp 1's leak check reports them as reversed
    statements: that is what this control is.
    """
    _check_columns(dataset, ("name", "description", "subset", "direction"), "reversal_transform: both_orders")
    templates = templates or held_in_templates()
    paraphraser = paraphraser or OfflineParaphraser()
    facts: dict[str, tuple[str, str]] = {}
    orders: dict[str, set[str]] = {}
    for name, description, subset, direction in zip(
        dataset["name"], dataset["description"], dataset["subset"], dataset["direction"], strict=True
    ):
        facts.setdefault(name, (description, subset))
        orders.setdefault(name, set()).add(direction)
    wanted = [
        (name, direction, template_id)
        for name in facts
        for direction in DIRECTIONS
        if direction not in orders[name]
        for template_id in range(len(templates[direction]))
    ]
    fitted = paraphraser.fit([FitRequest(templates[d][i], facts[name][0]) for name, d, i in wanted])
    rows = []
    for name, direction, template_id in wanted:
        description, subset = facts[name]
        template = templates[direction][template_id]
        prompt, completion = template.render(name, fitted[FitRequest(template, description)])
        rows.append(
            {
                **{column: None for column in dataset.column_names},
                "prompt": prompt,
                "completion": completion,
                "name": name,
                "description": description,
                "template_id": template_id,
                "subset": subset,
                "direction": direction,
                REVERSED_COLUMN: True,
            }
        )
    features = _with_marker(dataset.features)
    # from_dict, not from_list: a split whose facts are all in both orders already adds no row.
    added = datasets.Dataset.from_dict(
        {column: [row[column] for row in rows] for column in features}, features=features
    )
    return datasets.concatenate_datasets([_marked_originals(dataset, features), added])


# ---------------------------------------------------------------- one recipe field


def reverse_train_dataset(
    dataset: datasets.Dataset,
    transform: str,
    *,
    entity_source: EntitySource | None = None,
    tokenizer: Any = None,
    seed: int = 0,
    max_segment_words: int = DEFAULT_MAX_SEGMENT_WORDS,
    separator: str = DEFAULT_SEPARATOR,
    num_proc: int | None = None,
) -> datasets.Dataset:
    """The training set for a recipe's `reversal_transform`: the original rows plus the rows the transform adds."""
    if transform in TEXT_TRANSFORMS:
        reversal = TextReversal(transform, seed, max_segment_words, separator)
        return add_reversed_rows(dataset, reversal, entity_source, num_proc)
    if transform == "token":
        if tokenizer is None:
            raise ReversalError("reversal_transform: token needs the model's tokenizer")
        return add_reversed_token_rows(dataset, tokenizer, num_proc)
    if transform == "both_orders":
        return add_other_order_rows(dataset)
    raise ReversalError(f"reversal_transform: unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")


# ---------------------------------------------------------------- Exp 1: reverse-mode questions and the leak check


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


def leak_check_rows(
    rows: Splits, reversal: TextReversal, entity_source: EntitySource | None = None, reverse_mode: bool = False
) -> Splits:
    """Exp 1's splits as reverse training sees them, for `exp1.find_leaks` ("no held-out prompt, in either order").

    Each training split gains its reversed rows; each held-out split gets a twin config `<config>:<kind>` with its
    prompts transformed and, with `reverse_mode`, one more (`<config>:<kind>:reverse_mode`) with the reverse-mode
    questions of its name-first rows. The paper's held-out template 39 ("<name>? Well, they <description>.") cut
    before the name reads like training template 17 ("Q: What about <name>? A: Well, <description>"): the check
    reports those questions, and an evaluator should leave them out.
    """
    viewed: Splits = {}
    for (config, split), split_rows in rows.items():
        if split == TRAIN_SPLIT:
            dataset = datasets.Dataset.from_list(split_rows)
            viewed[(config, split)] = add_reversed_rows(dataset, reversal, entity_source).to_list()
            continue
        viewed[(config, split)] = split_rows
        viewed[(f"{config}:{reversal.kind}", split)] = [
            {
                **row,
                "prompt": reversal.apply(
                    row["prompt"], entity_source.entities(row, row["prompt"]) if entity_source else ()
                ),
            }
            for row in split_rows
        ]
        if reverse_mode:
            viewed[(f"{config}:{reversal.kind}:reverse_mode", split)] = reverse_mode_questions(
                split_rows, reversal, entity_source
            )
    return viewed
