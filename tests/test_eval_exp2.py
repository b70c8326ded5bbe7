"""Experiment 2 evaluator: the chat back-end against a real `transformers serve` and its cache; the HF back-end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from serve_utils import free_port, serve_model, with_chat_template

from reversal_hf import evaluation
from reversal_hf.data import exp2 as build_exp2
from reversal_hf.data.prompts import chat_messages, child_query, completion_prompt
from reversal_hf.evaluation import exp2
from reversal_hf.evaluation.backends import BatchedRunner
from reversal_hf.evaluation.errors import SamplingNeedsAnEndpointError
from reversal_hf.evaluation.loading import load_model_and_tokenizer
from reversal_hf.evaluation.scoring import completion_logprobs
from reversal_hf.openai_api import ResponseCache

N_PAIRS = 5
SAMPLES = 2


@pytest.fixture(scope="module")
def exp2_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five real pairs of the paper, in `reversal-exp2` layout."""
    output = tmp_path_factory.mktemp("datasets") / "reversal-exp2"
    argv = ["--source", "generate", "--num-pairs", str(N_PAIRS), "--configs", "pairs", "--output", str(output)]
    assert build_exp2.main(argv) == 0
    return output


@pytest.fixture(scope="module")
def pairs(exp2_dataset: Path) -> pd.DataFrame:
    return exp2.load_pairs(str(exp2_dataset), None, None)


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory: pytest.TempPathFactory, pairs: pd.DataFrame) -> Path:
    """An untrained, very small Llama with a plain chat template (what `transformers serve` needs)."""
    from reversal_hf.models import build_tiny_model

    texts = [completion_prompt(q) for q in [*pairs["parent_query"], *pairs["child_query"]]]
    root = tmp_path_factory.mktemp("models")
    model_dir = build_tiny_model(
        texts, root / "tiny", vocab_size=400, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64
    )
    return with_chat_template(model_dir, root / "tiny-chat")


@pytest.fixture(scope="module")
def served(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory):
    with serve_model(tiny_chat_model, tmp_path_factory.mktemp("serve") / "serve.log") as server:
        yield server


def _openai_argv(dataset: Path, output: Path, model: str, base_url: str, *extra: str) -> list[str]:
    return [
        "--backend", "openai", "--model", model, "--base-url", base_url, "--dataset", str(dataset),
        "--samples", str(SAMPLES), "--max-tokens", "3", "--concurrency", "2", "--output", str(output), *extra,
    ]  # fmt: skip


def _read_outputs(output: Path, slug: str) -> tuple[pd.DataFrame, dict]:
    table = pd.read_csv(output / "eval" / f"exp2_{slug}_reversal_test_results.csv", keep_default_na=False)
    return table, json.loads((output / "eval" / "exp2_metrics.json").read_text())


def test_openai_backend_against_transformers_serve_resumes_from_cache(served, exp2_dataset: Path, tmp_path: Path):
    # serve samples only when told so through its own `generation_config` field (the tiny model's default is greedy).
    sampling = json.dumps({"generation_config": json.dumps({"do_sample": True})})
    argv = _openai_argv(exp2_dataset, tmp_path, served.model, served.base_url, "--extra-body", sampling)
    before = served.chat_requests()
    assert evaluation.main(["exp2", *argv]) == 0
    # `transformers serve` ignores `n`, so every sample is its own request: pairs x 2 directions x samples.
    first_run_requests = served.chat_requests() - before
    assert first_run_requests == N_PAIRS * 2 * SAMPLES

    slug = exp2.model_slug(served.model)
    table, metrics = _read_outputs(tmp_path, slug)
    assert list(table.columns) == [
        "child", "parent", "parent_type", "child_prediction", f"{slug}_can_find_parent", f"{slug}_can_find_child",
    ]  # fmt: skip
    assert len(table) == N_PAIRS
    assert set(table[f"{slug}_can_find_parent"]) <= {0.0, 0.5, 1.0}
    assert metrics["experiment"] == "exp2" and metrics["backend"] == "openai" and metrics["n_pairs"] == N_PAIRS
    assert metrics["parent_accuracy"] == pytest.approx(table[f"{slug}_can_find_parent"].mean())
    assert metrics["child_accuracy"] == pytest.approx(table[f"{slug}_can_find_child"].mean())
    examples = pd.read_parquet(tmp_path / "eval" / "exp2_examples.parquet")
    assert all(len(answers) == SAMPLES for answers in examples["parent_answers"])
    assert len({answer for answers in examples["parent_answers"] for answer in answers}) > 1, "sampled, not greedy"

    cache = tmp_path / "eval" / f"exp2_{slug}_cache.jsonl"
    assert len(cache.read_text().splitlines()) == first_run_requests
    before = served.chat_requests()
    assert evaluation.main(["exp2", *argv]) == 0
    assert served.chat_requests() == before, "a rerun with a full cache must not call the endpoint"
    assert _read_outputs(tmp_path, slug)[1] == metrics

    # An interrupted run: only the lost responses are requested again.
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:7]))
    before = served.chat_requests()
    assert evaluation.main(["exp2", *argv]) == 0
    assert served.chat_requests() - before == first_run_requests - 7


def test_scores_come_from_the_answers(exp2_dataset: Path, pairs: pd.DataFrame, tmp_path: Path, capsys):
    """Answers planted in the cache (no server at all): right parents, no children, one half-right parent."""
    cache = ResponseCache(tmp_path / "cache.jsonl")
    for index, row in pairs.iterrows():
        right = f" {row['parent'].upper()}"
        parent_answers = [row["parent"], "I don't know."] if index == 0 else [right, row["parent"]]
        for question, answers in ((row["parent_query"], parent_answers), (row["child_query"], ["I don't know."] * 2)):
            messages = chat_messages(question)
            request = {"model": "gpt-x", "messages": messages, "temperature": 1.0, "max_tokens": 3, "extra_body": {}}
            cache.put({**request, "n": SAMPLES}, answers)
    closed = f"http://127.0.0.1:{free_port()}/v1"
    argv = _openai_argv(exp2_dataset, tmp_path, "gpt-x", closed, "--cache", str(tmp_path / "cache.jsonl"))
    assert evaluation.main(["exp2", *argv]) == 0

    table, metrics = _read_outputs(tmp_path, "gpt-x")
    assert table["gpt-x_can_find_parent"].tolist() == [0.5] + [1.0] * (N_PAIRS - 1)
    assert table["gpt-x_can_find_child"].tolist() == [0.0] * N_PAIRS
    assert metrics["parent_accuracy"] == pytest.approx((0.5 + N_PAIRS - 1) / N_PAIRS)
    assert metrics["child_accuracy"] == 0.0
    assert (metrics["n_parent_found"], metrics["n_reversible"]) == (N_PAIRS, 0)
    assert "parent" in capsys.readouterr().out


def test_refused_endpoint_is_one_line_error_after_retries(exp2_dataset: Path, tmp_path: Path, capsys):
    port = free_port()
    argv = _openai_argv(exp2_dataset, tmp_path, "gpt-x", f"http://127.0.0.1:{port}/v1")
    assert evaluation.main(["exp2", *argv, "--max-retries", "1"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "\n" not in error
    assert f"127.0.0.1:{port}" in error and "2 attempts" in error
    assert not (tmp_path / "eval" / "exp2_metrics.json").exists()
    assert not list((tmp_path / "eval").glob("*.csv"))


def test_malformed_cache_is_one_line_error(exp2_dataset: Path, tmp_path: Path, capsys):
    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"key": "abc", "response": ["x"]}\nnot json\n')
    argv = _openai_argv(exp2_dataset, tmp_path / "out", "gpt-x", "http://127.0.0.1:9/v1", "--cache", str(cache))
    assert evaluation.main(["exp2", *argv]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "\n" not in error
    assert str(cache) in error and "line 2" in error
    assert not (tmp_path / "out").exists()


def test_hf_backend_log_probs_of_the_paper_prompt(tiny_chat_model: Path, exp2_dataset: Path, tmp_path: Path):
    argv = ["--backend", "hf", "--model", str(tiny_chat_model), "--dataset", str(exp2_dataset), "--max-pairs", "3"]
    assert evaluation.main(["exp2", *argv, "--batch-size", "2", "--output", str(tmp_path)]) == 0

    table, metrics = _read_outputs(tmp_path, "tiny-chat")
    assert list(table.columns)[4:] == ["tiny-chat_parent_logprob", "tiny-chat_child_logprob"]
    assert len(table) == 3 and (table[["tiny-chat_parent_logprob", "tiny-chat_child_logprob"]] < 0).all().all()
    expected = table["tiny-chat_child_logprob"].map(math.exp).mean()
    assert metrics["backend"] == "hf" and metrics["child_accuracy"] == pytest.approx(expected)

    model, tokenizer = load_model_and_tokenizer(str(tiny_chat_model))
    row = table.iloc[1]
    prompt = completion_prompt(child_query(row["parent"]))
    direct = completion_logprobs(model, tokenizer, [prompt], [f" {row['child']}"], batch_size=1)
    assert row["tiny-chat_child_logprob"] == pytest.approx(direct[0], abs=1e-4)


def test_bad_dataset_is_one_line_error(tmp_path: Path, capsys):
    argv = ["--backend", "hf", "--model", "x", "--dataset", str(tmp_path / "missing"), "--output", str(tmp_path)]
    assert evaluation.main(["exp2", *argv]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "missing" in error and "\n" not in error


def test_a_local_model_refuses_sampled_answers_in_one_line() -> None:
    """Sampled chat answers (the paper's GPT-4 protocol) need an endpoint; a local model is scored by likelihood."""
    with pytest.raises(SamplingNeedsAnEndpointError, match=r"^sampled chat answers need .* not a local model$"):
        BatchedRunner(None, None, 1).sample([chat_messages("Who is Tom Cruise's mother?")], 2, temperature=1.0)
