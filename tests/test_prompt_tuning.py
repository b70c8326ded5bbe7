"""Appendix B.8's controls: a soft prompt initialised at random, and a shuffled set matched to the reverse prompts by
template."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from datasets import Dataset
from peft import PromptTuningInit
from transformers import AutoTokenizer

from reversal_hf.configs import ScriptArguments
from reversal_hf.evaluation.exp1 import template_matched_prompts
from reversal_hf.train import peft_config

FACT_ROW = {"prompt": "Daphne Barrington is", "completion": " the director of A Journey Through Time."}


def _config(tiny_model_dir: Path, init: str):
    args = ScriptArguments(
        training_mode="prompt_tuning", prompt_tuning_fact="Daphne Barrington", prompt_tuning_init=init
    )
    recipe = SimpleNamespace(script_args=args)
    return peft_config(recipe, str(tiny_model_dir), Dataset.from_list([FACT_ROW]))


def test_random_init_is_as_long_as_the_facts_prompt_and_starts_from_no_text(tiny_model_dir: Path) -> None:
    text, random = _config(tiny_model_dir, "text"), _config(tiny_model_dir, "random")
    n_tokens = len(AutoTokenizer.from_pretrained(tiny_model_dir)(FACT_ROW["prompt"] + FACT_ROW["completion"]).input_ids)
    assert text.prompt_tuning_init == PromptTuningInit.TEXT and text.num_virtual_tokens == n_tokens
    assert random.prompt_tuning_init == PromptTuningInit.RANDOM and random.num_virtual_tokens == n_tokens
    assert random.prompt_tuning_init_text is None


def test_shuffled_prompts_keep_each_rows_template_and_change_the_fact() -> None:
    rows = pd.DataFrame({"name": ["A"] * 3, "template_id": [30, 31, 30], "prompt": ["a30", "a31", "a30b"]})
    others = pd.DataFrame(
        {"name": ["B", "B", "C", "C"], "template_id": [30, 31, 30, 31], "prompt": ["b30", "b31", "c30", "c31"]}
    )
    shuffled = template_matched_prompts(rows, others, "0:A")
    assert [prompt[1:] for prompt in shuffled] == ["30", "31", "30"]
    assert all(prompt[0] in "bc" for prompt in shuffled)
    assert shuffled == template_matched_prompts(rows, others, "0:A")  # seeded
