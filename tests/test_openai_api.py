"""The OpenAI layer: client construction from the environment, the response cache, what is retried and what fails at
once (counted at a scripted endpoint on 127.0.0.1), and the concurrent runner."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from serve_utils import ScriptedChatEndpoint, scripted_chat_endpoint

from reversal_hf.files import FileFormatError
from reversal_hf.openai_api import (
    LOCAL_API_KEY,
    OPENAI_BASE_URL,
    OpenAIAPIError,
    ResponseCache,
    chat_choices,
    make_client,
    run_concurrently,
)

QUESTION = [{"role": "user", "content": "Who is Elon Musk's mother?"}]


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedChatEndpoint]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with scripted_chat_endpoint() as server:
        yield server


def test_client_reads_key_and_endpoint_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(OpenAIAPIError, match="^OPENAI_API_KEY is not set"):
        make_client()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    local = make_client(max_retries=3, timeout_s=5.0)
    assert (str(local.base_url), local.api_key, local.max_retries) == ("http://127.0.0.1:9/v1/", LOCAL_API_KEY, 3)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert make_client("http://127.0.0.1:8/v1").api_key == "sk-test"
    assert str(make_client(OPENAI_BASE_URL).base_url).rstrip("/") == OPENAI_BASE_URL


def test_client_retries_what_the_sdk_retries_and_a_cached_rerun_sends_nothing(
    endpoint: ScriptedChatEndpoint, tmp_path: Path
) -> None:
    endpoint.script = [408, 409, 429, 500, 503]
    cache = ResponseCache(tmp_path / "c.jsonl")
    request = {"model": "m", "messages": QUESTION, "n": 3, "extra_body": {"top_k": 5}}
    started = time.monotonic()
    answers = chat_choices(make_client(endpoint.base_url, max_retries=5), cache, **request)
    assert answers == ["Answer 0", "Answer 1", "Answer 2"]
    # The failures asked for a 1 ms Retry-After; the client's own backoff would wait over 11 s in all.
    assert time.monotonic() - started < 5
    assert [(body["n"], body["top_k"]) for body in endpoint.received] == [(3, 5)] * 6

    rerun = chat_choices(make_client(endpoint.base_url), ResponseCache(tmp_path / "c.jsonl"), **request)
    assert rerun == answers and len(endpoint.received) == 6


@pytest.mark.parametrize("status", [400, 401, 404, 422])
def test_other_client_errors_fail_at_once_on_one_line(
    endpoint: ScriptedChatEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-test-key")
    endpoint.script = [status]
    client = make_client(endpoint.base_url, max_retries=5)
    with pytest.raises(OpenAIAPIError) as raised:
        chat_choices(client, ResponseCache(tmp_path / "c.jsonl"), model="m", messages=QUESTION)
    message = str(raised.value)
    assert message.startswith(f"{endpoint.base_url} refused the request: HTTP {status} ")
    assert message.endswith(f": scripted {status}") and "\n" not in message and "sk-secret" not in message
    assert len(endpoint.received) == 1
    assert not (tmp_path / "c.jsonl").exists()


def test_gives_up_on_an_endpoint_that_times_out(endpoint: ScriptedChatEndpoint, tmp_path: Path) -> None:
    endpoint.script = [0, 0]
    cache = ResponseCache(tmp_path / "c.jsonl")
    client = make_client(endpoint.base_url, max_retries=1, timeout_s=0.2)
    with pytest.raises(OpenAIAPIError, match="did not answer after 2 attempts: APITimeoutError"):
        chat_choices(client, cache, model="m", messages=QUESTION)
    assert len(endpoint.received) == 2 and len(cache) == 0


def test_cache_drops_a_write_cut_short_and_appends_after_it(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    first, second = {"model": "m", "n": 1}, {"model": "m", "n": 2}
    path.write_text(f'{{"key": "{ResponseCache.key(first)}", "response": ["Maye Musk"]}}\n{{"key": "b", "respo')
    cache = ResponseCache(path)
    assert cache.get(first) == ["Maye Musk"] and cache.get(second) is None
    cache.put(second, ["Craig Hemsworth"])
    reloaded = ResponseCache(path)
    assert (reloaded.get(first), reloaded.get(second)) == (["Maye Musk"], ["Craig Hemsworth"])
    path.write_text('{"response": []}\n')
    with pytest.raises(FileFormatError, match=f"^{path} line 1: "):
        ResponseCache(path)


def test_run_concurrently_keeps_input_order_and_raises_the_first_failure() -> None:
    assert run_concurrently(lambda x: x * x, range(6), concurrency=3, description="squares") == [0, 1, 4, 9, 16, 25]

    def fail_on_three(x: int) -> int:
        if x == 3:
            raise OpenAIAPIError("three")
        return x

    with pytest.raises(OpenAIAPIError, match="three"):
        run_concurrently(fail_on_three, range(6), concurrency=2, description="failing")
