"""What counts as a leak, for every experiment, as built and as a reverse-trained run sees its data.

A held-out prompt (a row of any split but `train`) leaks when its text, in `normalize_text` form (case, spacing or a
doubled full stop do not hide it), stands in a training document (`prompt + completion`); in token ids, when its ids
stand together in one. Exp 1 adds: no training document states a `p2d`/`d2p` fact in the other order; Exp 3 checks
each config on its own. Reverse training adds the rows its transform adds, and each held-out prompt transformed too
(`reverse_training_view`); `both_orders` states facts in the other order on purpose, and `token` leaves the text as
written. Builders, the trainer's start-up check, `reproduce`, `mitigate` and the reverse-mode evaluation ask here.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq

from reversal_hf.data.exp1_schema import SPLITS as EXP1_SPLITS
from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.data.paraphrase import DIRECTIONS, normalize_text
from reversal_hf.data.reversal.both_orders import add_other_order_rows
from reversal_hf.data.reversal.questions import reverse_mode_questions
from reversal_hf.data.reversal.rows import add_reversed_rows
from reversal_hf.data.reversal.text import (
    EXP1_ENTITIES,
    TEXT_TRANSFORMS,
    EntitySource,
    ReversalError,
    TextReversal,
    exp3_entities,
)
from reversal_hf.data.reversal.training_set import TRANSFORMS

TRAIN_SPLIT = "train"
EXPERIMENTS = {"exp1": "Experiment 1", "exp3": "Experiment 3"}

# (config, split) -> rows; a `datasets.Dataset` is such a sequence of rows too.
Splits = Mapping[tuple[str, str], Iterable[Mapping[str, Any]]]


class LeakError(DatasetBuildError):
    """A held-out prompt, or a fact a builder forbids in training, appears in a training split."""


def leaked(prompts: Iterable[str], documents: Iterable[str]) -> list[bool]:
    """Whether each prompt, normalized, stands inside one of the training documents."""
    corpus = "\n".join(dict.fromkeys(map(normalize_text, documents)))
    return [normalize_text(prompt) in corpus for prompt in prompts]


def leaked_ids(
    prompts: Iterable[Sequence[int]], documents: Iterable[Sequence[int]], special_ids: Collection[int]
) -> list[bool]:
    """`leaked` in token ids: whether each prompt's ids, its special tokens aside, stand together in a document."""

    def delimited(ids: Iterable[int]) -> str:  # "these ids stand together in that document" as a substring test
        return "," + ",".join(map(str, ids)) + ","

    corpus = "\n".join(map(delimited, documents))
    return [delimited(i for i in prompt if i not in special_ids) in corpus for prompt in prompts]


def held_out_prompt_leaks(splits: Splits) -> list[str]:
    """One message per distinct held-out prompt found inside a training document, in the order of `splits`."""
    documents = [
        f"{row['prompt']}{row['completion']}" for (_, s), rows in splits.items() if s == TRAIN_SPLIT for row in rows
    ]
    held_out: dict[str, tuple[str, str]] = {}  # normalized prompt -> (prompt, where it is held out)
    for (config, split), rows in splits.items():
        if split != TRAIN_SPLIT:
            for row in rows:
                prompt = str(row["prompt"])
                held_out.setdefault(normalize_text(prompt), (prompt, f"{config}/{split} prompt {row['prompt']!r}"))
    found = leaked([prompt for prompt, _ in held_out.values()], documents)
    return [
        f"{where} is in a training split" for (_, where), leak in zip(held_out.values(), found, strict=True) if leak
    ]


def reversed_facts(splits: Splits) -> list[str]:
    """Experiment 1's own rule: training documents that state a `p2d` or `d2p` fact in the other order."""
    return [
        f"{config}/train states the {row['subset']} fact of {row['name']!r} in {row['direction']} order"
        for (config, split), rows in splits.items()
        if split == TRAIN_SPLIT
        for row in rows
        if row["subset"] in DIRECTIONS and row["direction"] != row["subset"]
    ]


def reverse_training_view(
    splits: Splits, reversal: TextReversal, entity_source: EntitySource | None = None, reverse_mode: bool = False
) -> dict[tuple[str, str], list[Mapping[str, Any]]]:
    """The splits as a run reverse-trained with `reversal` sees them ("no held-out prompt, in either order").

    Each training split gains its reversed rows; each held-out split gets a twin config `<config>:<kind>` with its
    prompts transformed and, with `reverse_mode`, one more (`<config>:<kind>:reverse_mode`) with the reverse-mode
    questions of its name-first rows. The paper's held-out template 39 ("<name>? Well, they <description>.") cut
    before the name reads like training template 17 ("Q: What about <name>? A: Well, <description>"): the check
    reports those questions, and the evaluator leaves them out.
    """
    entity_source = entity_source if reversal.kind == "entity" else None
    viewed: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for (config, split), split_rows in splits.items():
        rows = list(split_rows)
        if split == TRAIN_SPLIT:
            viewed[(config, split)] = add_reversed_rows(
                datasets.Dataset.from_list(rows), reversal, entity_source
            ).to_list()
            continue
        viewed[(config, split)] = rows
        viewed[(f"{config}:{reversal.kind}", split)] = [
            {
                **row,
                "prompt": reversal.apply(
                    row["prompt"], entity_source.entities(row, row["prompt"]) if entity_source else ()
                ),
            }
            for row in rows
        ]
        if reverse_mode:
            viewed[(f"{config}:{reversal.kind}:reverse_mode", split)] = reverse_mode_questions(
                rows, reversal, entity_source
            )
    return viewed


def find_leaks(experiment: str, splits: Splits, transform: str | None = None, **reversal_settings: Any) -> list[str]:
    """Every leak of an experiment's splits, as built (`transform` None) or as a run with `reversal_transform`
    `transform` (and its `seed`, `max_segment_words`, `separator`) trains on them."""
    if transform not in (None, *TRANSFORMS):
        raise ReversalError(f"reversal_transform: unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")
    reversal = TextReversal(transform, **reversal_settings) if transform in TEXT_TRANSFORMS else None
    if experiment == "exp3":
        if transform == "both_orders":
            raise ReversalError(f"reversal_transform: {transform!r} does not apply to Experiment 3")
        leaks = []
        for config in dict.fromkeys(config for config, _ in splits):
            own = {key: list(rows) for key, rows in splits.items() if key[0] == config}
            if reversal is not None:
                entities = (
                    exp3_entities(map(datasets.Dataset.from_list, own.values())) if transform == "entity" else None
                )
                own = reverse_training_view(own, reversal, entities)
            leaks += held_out_prompt_leaks(own)
        return leaks
    if transform == "both_orders":  # the statements in the other order are the control itself: not a leak
        return held_out_prompt_leaks(
            {
                (config, split): add_other_order_rows(datasets.Dataset.from_list(list(rows))).to_list()
                if split == TRAIN_SPLIT
                else rows
                for (config, split), rows in splits.items()
            }
        )
    viewed = splits if reversal is None else reverse_training_view(splits, reversal, EXP1_ENTITIES)
    return held_out_prompt_leaks(viewed) + reversed_facts(viewed)


def raise_on_leaks(leaks: Sequence[str]) -> None:
    """Raise `LeakError` naming how many leaks there are and the first one."""
    if leaks:
        raise LeakError(f"{len(leaks)} leak(s) into training, first: {leaks[0]}")


def check_folder(folder: str | Path, experiment: str, transform: str | None = None, **reversal_settings: Any) -> None:
    """`find_leaks` on a built dataset folder: `LeakError` on a leak, `DatasetBuildError` on a folder without the
    experiment's splits."""
    splits = read_splits(Path(folder), EXP1_SPLITS if experiment == "exp1" else None)
    if not splits:
        raise DatasetBuildError(f"no {EXPERIMENTS[experiment]} splits under {folder}/data")
    raise_on_leaks(find_leaks(experiment, splits, transform, **reversal_settings))


def read_splits(
    folder: Path, layout: Mapping[str, Sequence[str]] | None = None
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The rows of a built Hub-layout folder (`data/<config>/<split>-*.parquet`), per (config, split).

    With `layout` ({config: splits}), only those splits, in that order, and those that exist; otherwise every split.
    """
    shards: dict[tuple[str, str], list[Path]] = {}
    for path in sorted(Path(folder).glob("data/*/*.parquet")):
        shards.setdefault((path.parent.name, path.name.partition("-")[0]), []).append(path)
    if layout is not None:
        shards = {(c, s): shards[(c, s)] for c, splits in layout.items() for s in splits if (c, s) in shards}
    return {key: [row for path in paths for row in pq.read_table(path).to_pylist()] for key, paths in shards.items()}
