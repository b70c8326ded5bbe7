"""`both_orders`, Exp 1's oracle control: each fact also written in the other order with the held-in templates."""

from __future__ import annotations

from pathlib import Path

import datasets

from reversal_hf.data.exp1_generate import read_generation_templates
from reversal_hf.data.exp1_paper import TEMPLATES_DIR
from reversal_hf.data.exp1_schema import TRAIN_TEMPLATES
from reversal_hf.data.paraphrase import DIRECTIONS, FitRequest, OfflineParaphraser, Paraphraser, Template
from reversal_hf.data.reversal.rows import REVERSED_COLUMN, check_columns, marked_originals, with_marker


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
    check_columns(dataset, ("name", "description", "subset", "direction"), "reversal_transform: both_orders")
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
    features = with_marker(dataset.features)
    # from_dict, not from_list: a split whose facts are all in both orders already adds no row.
    added = datasets.Dataset.from_dict(
        {column: [row[column] for row in rows] for column in features}, features=features
    )
    return datasets.concatenate_datasets([marked_originals(dataset, features), added])
