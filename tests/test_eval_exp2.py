"""Experiment 2 evaluator: the chat back-end against a real `transformers serve`, its cache and retries; HF back-end."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
from serve_utils import free_port, serve_model, with_chat_template

from reversal_hf import evaluation
from reversal_hf.data.prompts import chat_messages, child_query, completion_prompt
from reversal_hf.evaluation import exp2
from reversal_hf.evaluation.loading import load_model_and_tokenizer
from reversal_hf.evaluation.openai_client import (
    CacheFileError,
    ChatClient,
    ChatClientError,
    ChatRequest,
    ResponseCache,
    freeze_messages,
)
from reversal_hf.evaluation.scoring import completion_logprobs

N_PAIRS = 5
SAMPLES = 2


@pytest.fixture(scope="module")
def exp2_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five real pairs of the paper, in `reversal-exp2` layout."""
    from reversal_hf.data import exp2 as build_exp2

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
            request = ChatRequest("gpt-x", freeze_messages(chat_messages(question)), 1.0, 3, SAMPLES, 0)
            cache.put(request.cache_key(), answers)
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
    assert evaluation.main(["exp2", *argv, "--max-attempts", "2", "--backoff-seconds", "0"]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "\n" not in error
    assert f"127.0.0.1:{port}" in error and "2 attempts" in error
    assert not (tmp_path / "eval" / "exp2_metrics.json").exists()
    assert not list((tmp_path / "eval").glob("*.csv"))


def test_malformed_cache_is_one_line_error(exp2_dataset: Path, tmp_path: Path, capsys):
    cache = tmp_path / "cache.jsonl"
    cache.write_text('{"key": "abc", "choices": ["x"]}\nnot json\n')
    argv = _openai_argv(exp2_dataset, tmp_path / "out", "gpt-x", "http://127.0.0.1:9/v1", "--cache", str(cache))
    assert evaluation.main(["exp2", *argv]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ") and "\n" not in error
    assert str(cache) in error and "line 2" in error
    assert not (tmp_path / "out").exists()


def test_cache_drops_a_write_cut_short_and_appends_after_it(tmp_path: Path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"key": "a", "choices": ["Maye Musk"]}\n{"key": "b", "choi')
    cache = ResponseCache(path)
    assert cache.get("a") == ["Maye Musk"] and cache.get("b") is None
    cache.put("b", ["Craig Hemsworth"])
    reloaded = ResponseCache(path)
    assert (reloaded.get("a"), reloaded.get("b")) == (["Maye Musk"], ["Craig Hemsworth"])
    with pytest.raises(CacheFileError, match="line 1"):
        path.write_text('{"choices": []}\n')
        ResponseCache(path)


class _ScriptedEndpoint(BaseHTTPRequestHandler):
    """Answers chat completions with the next status of `script` (then 200 with one choice per requested `n`);
    status 0 means hang for a second before answering."""

    script: list[int] = []
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append(body)
        status = self.script.pop(0) if self.script else 200
        if status == 0:
            time.sleep(1.0)
            status = 200
        choices = [
            {"index": i, "message": {"role": "assistant", "content": f"Answer {i}"}, "finish_reason": "stop"}
            for i in range(body.get("n", 1))
        ]
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": choices}
        data = json.dumps(payload if status == 200 else {"error": {"message": f"scripted {status}"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def scripted_endpoint() -> Iterator[type[_ScriptedEndpoint]]:
    handler = type("Endpoint", (_ScriptedEndpoint,), {"script": [], "received": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    handler.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield handler
    server.shutdown()
    server.server_close()


def test_client_retries_rate_limits_and_server_errors(scripted_endpoint, tmp_path: Path):
    scripted_endpoint.script = [429, 503]
    cache = ResponseCache(tmp_path / "c.jsonl")
    client = ChatClient(scripted_endpoint.base_url, "m", cache, extra_body={"top_k": 5}, backoff_s=0.0)
    answers = client.sample([{"role": "user", "content": "Who is Elon Musk's mother?"}], 3, 1.0, 8)
    assert answers == ["Answer 0", "Answer 1", "Answer 2"]
    assert client.requests_sent == 3
    assert [(body["n"], body["top_k"]) for body in scripted_endpoint.received] == [(3, 5)] * 3


def test_client_gives_up_on_an_endpoint_that_times_out(scripted_endpoint, tmp_path: Path):
    scripted_endpoint.script = [0, 0]
    cache = ResponseCache(tmp_path / "c.jsonl")
    client = ChatClient(scripted_endpoint.base_url, "m", cache, max_attempts=2, timeout_s=0.2, backoff_s=0.0)
    with pytest.raises(ChatClientError, match="did not answer after 2 attempts: APITimeoutError"):
        client.sample([{"role": "user", "content": "hi"}], 1, 1.0, 8)
    assert len(scripted_endpoint.received) == 2 and len(cache) == 0


def test_client_does_not_retry_a_bad_request(scripted_endpoint, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test-key")
    scripted_endpoint.script = [400]
    client = ChatClient(scripted_endpoint.base_url, "m", ResponseCache(tmp_path / "c.jsonl"), backoff_s=0.0)
    with pytest.raises(ChatClientError, match="HTTP 400") as raised:
        client.sample([{"role": "user", "content": "hi"}], 1, 1.0, 8)
    assert client.requests_sent == 1 and "sk-secret" not in str(raised.value)
    assert not (tmp_path / "c.jsonl").exists()


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
