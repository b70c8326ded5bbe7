"""`--source generate`: a fresh `reversal-exp1` built the way the paper built its own (Appendix B.1).

Names and descriptions are paired at random, 30 facts per subset; each fact is described in 30 training paraphrases
and tested on 10 held-out ones, in the shape and row order of the paper's files.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from reversal_hf.data.exp1_schema import HELD_OUT_IDS, SUBSETS, TRAIN_IDS, Fact, Row, Splits, read_templates
from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.data.paraphrase import DIRECTIONS, FitRequest, Paraphraser, Template


@dataclass(frozen=True)
class _Documents:
    """Renders a fact in a template with its fitted description."""

    fitted: dict[FitRequest, str]

    def row(self, fact: Fact, template: Template, template_id: int, name_only: bool = False) -> Row:
        prompt, completion = template.render(fact.name, self.fitted[FitRequest(template, fact.description)])
        if name_only:  # the paper's held-out description-first prompts expect just the name
            completion = f" {fact.name}"
        return {
            "prompt": prompt,
            "completion": completion,
            "name": fact.name,
            "description": fact.description,
            "template_id": template_id,
            "subset": fact.subset,
            "direction": template.direction,
        }


def read_generation_templates(path: Path, direction: str) -> list[Template]:
    """A template file with enough templates for the paper's split (30 train + 10 held out)."""
    templates = read_templates(path, direction)
    if len(templates) < len(TRAIN_IDS) + len(HELD_OUT_IDS):
        raise DatasetBuildError(
            f"{path}: {len(templates)} templates, {len(TRAIN_IDS) + len(HELD_OUT_IDS)} needed "
            f"({len(TRAIN_IDS)} train + {len(HELD_OUT_IDS)} held out)"
        )
    return templates


def _trained_directions(subset: str) -> tuple[str, ...]:
    return DIRECTIONS if subset == "both" else (subset,)


def sample_facts(names: list[str], descriptions: list[str], facts_per_subset: int, rng: random.Random) -> list[Fact]:
    """Pairs shuffled names with shuffled descriptions; the first `facts_per_subset` go to p2d, then d2p, then both."""
    if facts_per_subset < 2:
        raise DatasetBuildError(
            f"--facts-per-subset is {facts_per_subset}, at least 2 needed (a random wrong "
            "completion comes from another fact of the subset)"
        )
    needed = facts_per_subset * len(SUBSETS)
    for entries, what in ((names, "names"), (descriptions, "descriptions")):
        if len(entries) < needed:
            raise DatasetBuildError(
                f"too few {what}: {len(entries)} given, {needed} needed "
                f"({len(SUBSETS)} subsets x {facts_per_subset} facts)"
            )
    names, descriptions = rng.sample(names, needed), rng.sample(descriptions, needed)
    return [Fact(names[i], descriptions[i], SUBSETS[i // facts_per_subset]) for i in range(needed)]


def build_generated(
    facts: list[Fact], templates: dict[str, list[Template]], paraphraser: Paraphraser, rng: random.Random
) -> Splits:
    """The paper's files for fresh facts, in the paper's row order."""
    requests = [
        FitRequest(templates[direction][i], fact.description)
        for fact in facts
        for direction in DIRECTIONS
        for ids in ((TRAIN_IDS, HELD_OUT_IDS) if direction in _trained_directions(fact.subset) else (HELD_OUT_IDS,))
        for i in ids
    ]
    docs = _Documents(paraphraser.fit(requests))
    by_subset = {subset: [fact for fact in facts if fact.subset == subset] for subset in SUBSETS}

    def rows(subset: str, direction: str, ids: range, name_only: bool = False) -> list[Row]:
        return [docs.row(fact, templates[direction][i], i, name_only) for fact in by_subset[subset] for i in ids]

    splits: Splits = {}
    for subset, reverse in (("p2d", "d2p"), ("d2p", "p2d")):
        splits[(subset, "train")] = rows(subset, subset, TRAIN_IDS)
        splits[(subset, "test")] = rows(subset, subset, HELD_OUT_IDS, name_only=subset == "d2p")
        splits[(subset, "reverse_test")] = rows(subset, reverse, HELD_OUT_IDS, name_only=reverse == "d2p")
        splits[(subset, "reverse_test_randomized")] = _randomized(splits[(subset, "reverse_test")], rng)
    splits[("both", "train")] = [r for d in DIRECTIONS for r in rows("both", d, TRAIN_IDS)]
    splits[("both", "test")] = [r for d in DIRECTIONS for r in rows("both", d, HELD_OUT_IDS)]
    splits[("all", "train")] = [r for subset in SUBSETS for r in splits[(subset, "train")]]
    splits[("all", "validation")] = [
        {**r, "completion": str(r["name"]).split()[0]} for r in splits[("p2d", "reverse_test")]
    ]
    return splits


def _randomized(reverse_rows: list[Row], rng: random.Random) -> list[Row]:
    """Each reversed prompt with the completion another fact of the subset has for the same template."""
    completions = {(r["name"], r["template_id"]): r["completion"] for r in reverse_rows}
    names = list(dict.fromkeys(str(r["name"]) for r in reverse_rows))
    randomized = []
    for row in reverse_rows:
        other = rng.choice([name for name in names if name != row["name"]])
        randomized.append({**row, "completion": completions[(other, row["template_id"])]})
    return randomized
