"""docs/deviations.md quotes recipe fields as `recipe: field=value`; each quote must match the recipe it names."""

from __future__ import annotations

import re

import pytest
import yaml

from reversal_hf.configs import read_recipe
from reversal_hf.paths import REPO_ROOT

DEVIATIONS = REPO_ROOT / "docs" / "deviations.md"
QUOTE = re.compile(r"`(\w+): (\w+)=([^`]+)`")
QUOTES = QUOTE.findall(DEVIATIONS.read_text(encoding="utf-8"))


def test_the_table_quotes_recipes() -> None:
    assert len(QUOTES) >= 10


@pytest.mark.parametrize(("recipe", "field", "value"), QUOTES)
def test_each_quoted_field_is_the_recipes(recipe: str, field: str, value: str) -> None:
    config = read_recipe(recipe)
    assert field in config, f"{recipe} has no field {field}"
    assert config[field] == yaml.safe_load(value), f"{recipe}: {field} is {config[field]!r}, the table says {value}"


def test_the_paper_protocol_recipe_has_no_early_stop() -> None:
    """Exp 3's default recipe runs the paper's fixed 20 epochs; a stop lives only in a recipe named for it."""
    assert "eval_curves_stop_at_realized" not in read_recipe("exp3_smollm2_135m")
    assert read_recipe("exp3_smollm2_135m_stop_early")["eval_curves_stop_at_realized"] == 0.9
