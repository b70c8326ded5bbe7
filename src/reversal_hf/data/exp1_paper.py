"""`--source paper`: the paper's `june_version_7921032488` files as `reversal-exp1` splits, row for row, annotated.

Each row gets its fact (name and source description), direction and template, recovered from `names.txt`,
`descriptions.txt` and the template files, so that evaluators never re-parse strings.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from pathlib import Path

from reversal_hf.data.exp1_schema import (
    SPLITS,
    SUBSETS,
    TRAIN_SPLIT,
    Fact,
    Row,
    Splits,
    read_lines,
    read_templates,
    read_unique,
)
from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.data.paraphrase import DIRECTIONS, Template, normalize_text
from reversal_hf.paths import PAPER_DATA_DIR

PAPER_EXP1_DIR = PAPER_DATA_DIR / "reverse_experiments"
PAPER_VERSION = "june_version_7921032488"
TEMPLATES_DIR = PAPER_EXP1_DIR / "templates"
# A split's file is "<config>_<stem>.jsonl" with these stems, except `all/validation`'s `validation_prompts.jsonl`.
_SPLIT_STEMS = {
    "train": "prompts_train",
    "test": "prompts_test",
    "reverse_test": "reverse_prompts_test",
    "reverse_test_randomized": "reverse_prompts_test_randomized",
}
PAPER_FILES = {
    (config, split): "validation_prompts" if split == "validation" else f"{config}_{_SPLIT_STEMS[split]}"
    for config, splits in SPLITS.items()
    for split in splits
}
# Splits whose completion is not the true fact: a row's true name comes from the same prompt in the other splits.
UNTRUSTED_COMPLETIONS = {("p2d", "reverse_test_randomized"), ("d2p", "reverse_test_randomized"), ("all", "validation")}


def read_jsonl(path: Path) -> list[dict[str, str]]:
    """Rows `{"prompt", "completion"}` of a paper file."""
    rows = []
    for number, line in read_lines(path, "paper data"):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetBuildError(f"{path}:{number}: not a JSON object ({err.msg})") from err
        if not isinstance(row, dict) or not all(isinstance(row.get(key), str) for key in ("prompt", "completion")):
            raise DatasetBuildError(f"{path}:{number}: expected string fields 'prompt' and 'completion'")
        rows.append({"prompt": row["prompt"], "completion": row["completion"]})
    return rows


# ---------------------------------------------------------------- template matching


@functools.cache
def _fixed_text(template: Template) -> tuple[str, str, str]:
    head, middle, tail = template.parts()
    return normalize_text(head), normalize_text(middle), normalize_text(tail)


def _match_score(template: Template, prompt: str, completion: str, name: str) -> int:
    """How much of the template's fixed text the row reproduces, or -1 when the row cannot come from it.

    Descriptions were bent by an LLM, so only the fixed text around the name and the prompt's ends are compared (all
    normalized: case, spaces, doubled punctuation); a held-out completion may stop after the name.
    """
    head, middle, tail = _fixed_text(template)
    if not (prompt.startswith(head) and prompt.endswith(middle)):
        return -1
    between = prompt[len(head) : len(prompt) - len(middle)].strip()
    if between != name if template.direction == "p2d" else not between:
        return -1
    tail_bonus = len(tail) if tail and completion.endswith(tail) else 0
    return len(head) + len(middle) + tail_bonus


def match_template(templates: list[Template], prompt: str, completion: str, name: str) -> int:
    """Index of the template a row was written from (the first of equally good ones), -1 when none fits.

    `name` is only read for name-first (p2d) rows, whose prompt must show it.
    """
    prompt, completion, name = normalize_text(prompt), normalize_text(completion), normalize_text(name)
    scores = [_match_score(template, prompt, completion, name) for template in templates]
    best = max(scores, default=-1)
    return scores.index(best) if best >= 0 else -1


# ---------------------------------------------------------------- annotation


class _PaperAnnotator:
    """Recovers each paper row's fact, direction and template from names.txt, descriptions.txt and the templates."""

    def __init__(self, names: list[str], descriptions: list[str], templates: dict[str, list[Template]]):
        self.descriptions = descriptions
        self.templates = templates
        alternatives = "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
        self.name_pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
        self.facts: dict[str, Fact] = {}
        self.name_by_prompt: dict[str, str] = {}

    def add_facts(self, subset: str, rows: list[dict[str, str]], source: Path) -> None:
        """Facts of a subset from its training file: the name in each row, the description most of its rows use."""
        texts_by_name: dict[str, list[str]] = {}
        for number, row in enumerate(rows, start=1):
            text = row["prompt"] + row["completion"]
            found = self.name_pattern.search(text)
            if not found:
                raise DatasetBuildError(f"{source}:{number}: no name from names.txt in {text!r}")
            texts_by_name.setdefault(found.group(), []).append(text.casefold())
        for name, texts in texts_by_name.items():
            counts = Counter(d for d in self.descriptions for text in texts if d.casefold() in text)
            if not counts:
                raise DatasetBuildError(f"{source}: no description from descriptions.txt found for {name!r}")
            self.facts[name] = Fact(name, counts.most_common(1)[0][0], subset)

    def index_prompts(self, rows: list[dict[str, str]]) -> None:
        """Remember the true name of description-first prompts whose completion states it."""
        for row in rows:
            if not self.name_pattern.search(row["prompt"]):
                found = self.name_pattern.match(row["completion"].strip())
                if found:
                    self.name_by_prompt[row["prompt"]] = found.group()

    def annotate(self, row: dict[str, str], where: str) -> Row:
        in_prompt = self.name_pattern.search(row["prompt"])
        direction = "p2d" if in_prompt else "d2p"
        name = in_prompt.group() if in_prompt else self.name_by_prompt.get(row["prompt"])
        if name is None:
            raise DatasetBuildError(f"{where}: cannot tell whose fact this is: {row['prompt']!r}")
        if name not in self.facts:
            raise DatasetBuildError(f"{where}: {name!r} is in no training file")
        fact = self.facts[name]
        template_id = match_template(self.templates[direction], row["prompt"], row["completion"], name)
        return {
            **row,
            "name": name,
            "description": fact.description,
            "template_id": template_id,
            "subset": fact.subset,
            "direction": direction,
        }


def build_from_paper(paper_dir: Path = PAPER_EXP1_DIR) -> Splits:
    """Every paper file as a split, row for row, annotated."""
    templates_dir = paper_dir / "templates"
    annotator = _PaperAnnotator(
        read_unique(templates_dir / "names.txt", "name"),
        read_unique(templates_dir / "descriptions.txt", "description"),
        {d: read_templates(templates_dir / f"{d}_templates.txt", d) for d in DIRECTIONS},
    )
    files = {key: paper_dir / PAPER_VERSION / f"{stem}.jsonl" for key, stem in PAPER_FILES.items()}
    raw = {key: read_jsonl(path) for key, path in files.items()}
    for subset in SUBSETS:
        annotator.add_facts(subset, raw[(subset, TRAIN_SPLIT)], files[(subset, TRAIN_SPLIT)])
    for key, rows in raw.items():
        if key not in UNTRUSTED_COMPLETIONS:
            annotator.index_prompts(rows)
    return {
        key: [annotator.annotate(row, f"{files[key]}:{number}") for number, row in enumerate(rows, start=1)]
        for key, rows in raw.items()
    }
