"""The leak check: no held-out prompt may be readable inside a training document.

Works on any dataset of `prompt`/`completion` rows, in memory or in a built Hub-layout folder: a held-out prompt
(a row of any split other than the training one) leaks when its text, normalized, stands anywhere in a training
document (`prompt + completion`). Texts are compared in `normalize_text` form, so case, spacing or a doubled full
stop do not hide a leak. A builder adds its own rules (e.g. Experiment 1 refuses a fact stated in reversed order).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.data.paraphrase import clean_text

TRAIN_SPLIT = "train"

# (config, split) -> rows; a `datasets.Dataset` is such a sequence of rows too.
Splits = Mapping[tuple[str, str], Iterable[Mapping[str, Any]]]


class LeakError(DatasetBuildError):
    """A held-out prompt, or a fact a builder forbids in training, appears in a training split."""


def normalize_text(text: str) -> str:
    """The form texts are compared in: doubled spaces and punctuation collapsed, whitespace as one space, casefolded."""
    return " ".join(clean_text(text).split()).casefold()


def held_out_prompt_leaks(splits: Splits, train_split: str = TRAIN_SPLIT) -> list[str]:
    """One message per distinct held-out prompt found inside a training document, in the order of `splits`."""
    training = [row for (_, split), rows in splits.items() if split == train_split for row in rows]
    corpus = "\n".join(dict.fromkeys(normalize_text(f"{row['prompt']}{row['completion']}") for row in training))
    held_out: dict[str, str] = {}  # normalized prompt -> where it is held out (prompts repeat across splits)
    for (config, split), rows in splits.items():
        if split != train_split:
            for row in rows:
                held_out.setdefault(normalize_text(str(row["prompt"])), f"{config}/{split} prompt {row['prompt']!r}")
    return [f"{where} is in a training split" for prompt, where in held_out.items() if prompt in corpus]


def raise_on_leaks(leaks: Sequence[str]) -> None:
    """Raise `LeakError` naming how many leaks there are and the first one."""
    if leaks:
        raise LeakError(f"{len(leaks)} leak(s) into training, first: {leaks[0]}")


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
