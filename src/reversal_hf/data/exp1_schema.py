"""What `reversal-exp1` is made of: its configs, splits and row columns, the facts, and the text files they come from.

Template split rule (read off the paper files: every fact's training row k uses template k, held-out row k uses
template 30 + k, in both template files): the first 30 templates of each file are for training, the next 10 held out,
the rest unused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reversal_hf.data.features import value_features
from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.data.paraphrase import Template

SUBSETS = ("p2d", "d2p", "both")
CONFIGS = ("p2d", "d2p", "both", "all")
TRAIN_SPLIT = "train"
SPLITS = {
    "p2d": ("train", "test", "reverse_test", "reverse_test_randomized"),
    "d2p": ("train", "test", "reverse_test", "reverse_test_randomized"),
    "both": ("train", "test"),
    "all": ("train", "validation"),
}
FACTS_PER_SUBSET = 30
TRAIN_TEMPLATES = 30
HELD_OUT_TEMPLATES = 10
TRAIN_IDS = range(TRAIN_TEMPLATES)
HELD_OUT_IDS = range(TRAIN_TEMPLATES, TRAIN_TEMPLATES + HELD_OUT_TEMPLATES)

FEATURES = value_features(
    ("prompt", "completion", "name", "description", "template_id", "subset", "direction"), template_id="int32"
)

Row = dict[str, str | int]
Splits = dict[tuple[str, str], list[Row]]


@dataclass(frozen=True)
class Fact:
    name: str
    description: str  # the source description (descriptions.txt), before any paraphrasing
    subset: str


def read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """(line number, text) of the non-blank lines of a text file."""
    try:
        data = Path(path).read_bytes()
        text = data.decode("utf-8")
    except OSError as err:
        raise DatasetBuildError(f"cannot read {what} file {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise DatasetBuildError(f"{path}:{line}: {what} file is not UTF-8 (byte {data[err.start]:#04x})") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise DatasetBuildError(f"{what} file {path} is empty")
    return lines


def read_unique(path: Path, what: str) -> list[str]:
    """The entries of a names or descriptions file, which must be distinct."""
    seen: dict[str, int] = {}
    for number, entry in read_lines(path, what):
        if entry in seen:
            raise DatasetBuildError(f"{path}:{number}: duplicate {what} {entry!r} (first on line {seen[entry]})")
        seen[entry] = number
    return list(seen)


def read_templates(path: Path, direction: str) -> list[Template]:
    return [Template.parse(text, direction, f"{path}:{number}") for number, text in read_lines(path, "template")]
