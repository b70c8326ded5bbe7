"""The one layer over the `openai` client: building it, caching its answers, running many requests, its errors.

Why one layer: dataset paraphrasing (`data/`) and API evaluation (`evaluation/`) send thousands of requests to
OpenAI-compatible endpoints (OpenAI, vLLM, `transformers serve`) and must resume an interrupted run without paying
twice. Retries are the client's own (`max_retries`): it retries timeouts, dropped connections and HTTP 408, 409, 429
and 5xx with exponential backoff, and waits as long as a `Retry-After` header asks (up to two minutes). Any other
failure stops the run with one `OpenAIAPIError` line naming the endpoint and the server's message. The key comes from
`OPENAI_API_KEY` and the default endpoint from `OPENAI_BASE_URL`, read here only; the key is never printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from tqdm.auto import tqdm

from reversal_hf.files import FileFormatError

if TYPE_CHECKING:  # the SDK takes most of a second to import: only code that makes a client loads it
    import openai

OPENAI_BASE_URL = "https://api.openai.com/v1"
LOCAL_API_KEY = "not-needed"  # local OpenAI-compatible servers accept any key, but the client needs one
DEFAULT_MAX_RETRIES = 5
DEFAULT_TIMEOUT_S = 60.0
COMPLETION_MODELS = frozenset({"babbage-002", "davinci-002"})  # OpenAI's base models of the completions endpoint
# What the client retries besides 5xx (openai/_base_client.py `_should_retry`): request timeout, conflict, rate limit.
RETRIED_STATUS = frozenset({408, 409, 429})

T = TypeVar("T")
R = TypeVar("R")


def is_completion_model(model: str) -> bool:
    """Whether an OpenAI model answers `/completions` (babbage-002, davinci-002 and their `ft:<base>:...` fine-tunes)
    rather than only `/chat/completions`."""
    return model.removeprefix("ft:").split(":")[0] in COMPLETION_MODELS


class OpenAIAPIError(RuntimeError):
    """An endpoint refused a request, answered something unusable or stayed unreachable after every retry (one line)."""


def make_client(
    base_url: str | None = None, *, max_retries: int = DEFAULT_MAX_RETRIES, timeout_s: float = DEFAULT_TIMEOUT_S
) -> openai.OpenAI:
    """A client for `base_url` (default: `OPENAI_BASE_URL`, else api.openai.com) that retries on its own.

    OpenAI itself needs `OPENAI_API_KEY`; any other endpoint gets a placeholder when the variable is unset.
    """
    import openai

    base_url = base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
    api_key = os.environ.get("OPENAI_API_KEY")
    if not api_key:
        if base_url.rstrip("/") == OPENAI_BASE_URL:
            raise OpenAIAPIError(f"OPENAI_API_KEY is not set ({OPENAI_BASE_URL} needs it)")
        api_key = LOCAL_API_KEY
    return openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=max_retries, timeout=timeout_s)


@contextmanager
def one_line_errors(client: openai.OpenAI) -> Iterator[None]:
    """Turn the SDK's errors, raised once the client's retries are spent, into one `OpenAIAPIError` line."""
    import openai

    endpoint = str(client.base_url).rstrip("/")
    try:
        yield
    except openai.APIStatusError as err:
        detail = f"HTTP {err.status_code} {type(err).__name__}: {_server_message(err)}"
        if err.status_code in RETRIED_STATUS or err.status_code >= 500:
            raise OpenAIAPIError(_one_line(f"{endpoint} {_gave_up(client)}: {detail}")) from None
        raise OpenAIAPIError(_one_line(f"{endpoint} refused the request: {detail}")) from None
    except openai.APIConnectionError as err:  # timeouts included
        raise OpenAIAPIError(_one_line(f"{endpoint} {_gave_up(client)}: {type(err).__name__}: {err}")) from None
    except openai.APIError as err:  # e.g. a body that is not what the endpoint should return
        raise OpenAIAPIError(_one_line(f"{endpoint} gave an unusable answer: {type(err).__name__}: {err}")) from None


def _gave_up(client: openai.OpenAI) -> str:
    return f"did not answer after {client.max_retries + 1} attempts"


def _server_message(err: openai.APIStatusError) -> str:
    """The `message` of the server's error body when it has one (the SDK's own text repeats the whole body)."""
    body = err.body
    if isinstance(body, Mapping) and body.get("message"):
        return str(body["message"])
    return err.message


def _one_line(text: str) -> str:
    return " ".join(text.split())


class ResponseCache:
    """Append-only JSON-lines file of `{"key": ..., "response": ...}`, one line per answered request.

    The key is a SHA-256 of the request's keyword arguments as canonical JSON; the endpoint URL is not part of it (the
    model name says what answered, and a local server restarted on another port still finds its answers). Each line
    goes out in one `write` on an `O_APPEND` descriptor, so a killed run leaves whole lines only; a last line without
    its newline (a write cut short) is dropped on load, any other bad line is an error.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._responses = self._load()

    @staticmethod
    def key(request: Mapping[str, Any]) -> str:
        canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _load(self) -> dict[str, Any]:
        if not self.path.exists():
            return {}
        complete, _, partial = self.path.read_bytes().rpartition(b"\n")
        if partial:
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
        responses: dict[str, Any] = {}
        for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
            try:
                record = json.loads(line)
                key, response = record["key"], record["response"]
                if not isinstance(key, str):
                    raise TypeError("key is not a string")
            except (ValueError, KeyError, TypeError):
                raise FileFormatError(
                    f'{self.path} line {number}: not a response cache line {{"key": <str>, "response": ...}}; '
                    "delete the line or the file"
                ) from None
            responses[key] = response
        return responses

    def __len__(self) -> int:
        return len(self._responses)

    def get(self, request: Mapping[str, Any]) -> Any | None:
        return self._responses.get(self.key(request))

    def put(self, request: Mapping[str, Any], response: Any) -> None:
        key = self.key(request)
        line = json.dumps({"key": key, "response": response}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, line.encode())
            finally:
                os.close(descriptor)
            self._responses[key] = response


def chat_choices(client: openai.OpenAI, cache: ResponseCache, **request: Any) -> list[str]:
    """The answers to one chat-completion request (`client.chat.completions.create` keywords): from `cache`, or from
    the endpoint and then cached."""
    choices = cache.get(request)
    if choices is None:
        with one_line_errors(client):
            response = client.chat.completions.create(**request)
        if not response.choices:
            endpoint = str(client.base_url).rstrip("/")
            raise OpenAIAPIError(f"{endpoint} answered with no choices for model {request.get('model')!r}")
        choices = [choice.message.content or "" for choice in response.choices]
        cache.put(request, choices)
    return choices


def run_concurrently(
    function: Callable[[T], R], items: Sequence[T], *, concurrency: int, description: str, unit: str = "request"
) -> list[R]:
    """`function` on every item, `concurrency` at a time, with a progress bar; results in input order.

    The first failure cancels what has not started and is raised once what is running has finished.
    """
    with (
        tqdm(total=len(items), desc=description, unit=unit) as progress,
        ThreadPoolExecutor(max_workers=concurrency) as pool,
    ):
        futures = [pool.submit(function, item) for item in items]
        for future in futures:
            future.add_done_callback(lambda _: progress.update())
        try:
            return [future.result() for future in futures]
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
