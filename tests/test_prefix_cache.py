"""Prefix-cached completion log-probs: the shared few-shot prefix runs once, and every score stays what the plain
full-sequence forward pass gives."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from reversal_hf.data.prompts import child_query, completion_prompt, parent_query
from reversal_hf.evaluation import backends, exp2, scoring
from reversal_hf.evaluation.backends import BatchedRunner
from reversal_hf.evaluation.loading import load_model_and_tokenizer

PAIRS = [("Tom Cruise", "Mary Lee Pfeiffer"), ("Elon Musk", "Maye Musk"), ("Bo", "Alexander Graham Bell Junior")]
# Two identical prompts whose completions share their first word: the common token prefix runs into the completion.
PROMPTS = [completion_prompt(parent_query(child, "mother")) for child, _ in PAIRS] + [completion_prompt("Who?")] * 2
COMPLETIONS = [f" {parent}" for _, parent in PAIRS] + [" Mary Lee", " Mary Ann Evans"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path):
    return load_model_and_tokenizer(str(tiny_model_dir), device="cpu")


@contextmanager
def forward_shapes(model) -> Iterator[list[tuple[int, int]]]:
    """The (batch, tokens) of every forward pass of `model`."""
    shapes: list[tuple[int, int]] = []
    handle = model.register_forward_pre_hook(
        lambda _, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        yield shapes
    finally:
        handle.remove()


@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_cached_logprobs_equal_plain_and_skip_the_prefix(tiny, batch_size: int):
    model, tokenizer = tiny
    plain = scoring.completion_logprobs(
        model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size, prefix_cache=False
    )
    with forward_shapes(model) as shapes:
        cached = scoring.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size)
    assert cached == pytest.approx(plain, abs=1e-4)

    (prefix_rows, prefix_length), *batches = shapes
    lengths = [len(tokenizer(p + c)["input_ids"]) for p, c in zip(PROMPTS, COMPLETIONS, strict=True)]
    assert prefix_rows == 1 and prefix_length >= scoring.PREFIX_CACHE_MIN_TOKENS
    assert [rows for rows, _ in batches] == [min(batch_size, 5 - start) for start in range(0, 5, batch_size)]
    assert max(width for _, width in batches) == max(lengths) - prefix_length
    # The stored prefix is not changed by the batches that used it: a second run gives the same scores.
    assert scoring.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=batch_size) == cached


def test_losses_use_the_cache_too(tiny):
    model, tokenizer = tiny
    plain = scoring.score_completions(model, tokenizer, PROMPTS, COMPLETIONS, 2, prefix_cache=False)
    cached = scoring.score_completions(model, tokenizer, PROMPTS, COMPLETIONS, 2)
    assert [count for _, count in cached] == [count for _, count in plain]
    assert BatchedRunner(model, tokenizer, 2).losses(PROMPTS, COMPLETIONS) == pytest.approx(
        [-total / count for total, count in plain], abs=1e-5
    )


def test_short_shared_prefix_runs_the_whole_sequences(tiny):
    model, tokenizer = tiny
    prompts, completions = ["Tom Cruise's mother is", "Daphne Barrington is the mother of"], [" Mary", " Tom"]
    with forward_shapes(model) as shapes:
        scoring.completion_logprobs(model, tokenizer, prompts, completions, batch_size=2)
    lengths = [len(tokenizer(p + c)["input_ids"]) for p, c in zip(prompts, completions, strict=True)]
    assert shapes == [(2, max(lengths))]


def test_prompt_tuning_model_runs_the_whole_sequences(tiny_model_dir: Path):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain = scoring.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=2, prefix_cache=False)
    with forward_shapes(model) as shapes:
        cached = scoring.completion_logprobs(model, tokenizer, PROMPTS, COMPLETIONS, batch_size=2)
    assert cached == pytest.approx(plain, abs=1e-5)
    assert [rows for rows, _ in shapes] == [2, 2, 1], "the batches only, no prefix pass"


def test_exp2_hf_backend_matches_plain_scoring(tiny, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """Every request scored in the batch it had before the Runner seam, a repeated pair too (the dataset has 20): the
    scores of `completion_logprobs` over all requests, to the last digit (SmolLM2's move by up to 2e-5 otherwise)."""
    model, tokenizer = tiny
    scored: list[int] = []

    def counted(model, tokenizer, prompts, *args):
        scored.append(len(prompts))
        return scoring.score_completions(model, tokenizer, prompts, *args)

    monkeypatch.setattr(backends, "score_completions", counted)
    both = [*PAIRS, PAIRS[0]]
    pairs = pd.DataFrame(
        {
            "child": [child for child, _ in both],
            "parent": [parent for _, parent in both],
            "parent_query": [parent_query(child, "mother") for child, _ in both],
            "child_query": [child_query(parent) for _, parent in both],
        }
    )
    scores = exp2.evaluate_hf(pairs, BatchedRunner(model, tokenizer, batch_size=2))
    every_request = scoring.completion_logprobs(model, tokenizer, *exp2.completion_requests(pairs), batch_size=2)
    assert scored == [2 * len(pairs)] and [*scores["parent_score"], *scores["child_score"]] == every_request
    for role, column in (("parent", "parent_query"), ("child", "child_query")):
        prompts = [completion_prompt(question) for question in pairs[column]]
        completions = [f" {name}" for name in pairs[role]]
        plain = scoring.completion_logprobs(model, tokenizer, prompts, completions, batch_size=1, prefix_cache=False)
        assert scores[f"{role}_score"].tolist() == pytest.approx(plain, abs=1e-4)
