"""Column types of the datasets, written the way docs/ARCHITECTURE.md lists them: names in order, strings by default."""

from __future__ import annotations

from collections.abc import Sequence

import datasets


def value_features(columns: Sequence[str], **dtypes: str) -> datasets.Features:
    """`datasets.Features` of plain values in the order of `columns` (the Parquet column order): each column is a
    string unless `dtypes` gives it another Arrow type (`int32`, `bool`, ...)."""
    unknown = set(dtypes) - set(columns)
    if unknown:
        raise ValueError(f"dtypes given for columns not listed: {', '.join(sorted(unknown))}")
    return datasets.Features({column: datasets.Value(dtypes.get(column, "string")) for column in columns})
