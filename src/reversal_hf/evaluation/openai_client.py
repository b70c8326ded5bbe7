"""A cached, retrying, concurrent client for OpenAI-compatible chat endpoints (OpenAI, vLLM, `transformers serve`).

Why: an API evaluation sends thousands of sampled requests. Every answered request is appended to a JSONL cache keyed
by a SHA-256 of the request, so an interrupted run resumes without paying twice; rate limits, 5xx answers, timeouts
and dropped connections are retried with exponential backoff, and anything else stops the run with one line naming
the endpoint. The API key comes from `OPENAI_API_KEY` only and is never printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import openai
from tqdm.auto import tqdm

# Local OpenAI-compatible servers accept any key, but the client refuses to start without one.
LOCAL_API_KEY = "not-needed"
# Status codes worth another try besides 5xx: request timeout, conflict, rate limit (as the openai SDK retries).
RETRYABLE_STATUS = frozenset({408, 409, 429})


class ChatClientError(RuntimeError):
    """The endpoint refused a request or stayed unreachable after every retry (one-line message)."""


class CacheFileError(ValueError):
    """The response cache file cannot be read (one-line message naming the file and line)."""


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completion request; `sample_offset` (the index of its first sample) only tells cache keys apart.

    The endpoint URL is not part of the key: the model name says what answered, and a local server restarted on
    another port still finds its cached answers.
    """

    model: str
    messages: tuple[tuple[tuple[str, str], ...], ...]
    temperature: float
    max_tokens: int
    n: int
    sample_offset: int
    extra_body: str = "{}"  # canonical JSON of server-specific fields, e.g. `transformers serve`'s generation_config

    def cache_key(self) -> str:
        canonical = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def api_messages(self) -> list[dict[str, str]]:
        return [dict(message) for message in self.messages]


def freeze_messages(messages: Sequence[dict[str, str]]) -> tuple[tuple[tuple[str, str], ...], ...]:
    """Messages as nested tuples (hashable, with a canonical key order) for `ChatRequest`."""
    return tuple(tuple(sorted(message.items())) for message in messages)


class ResponseCache:
    """Append-only JSONL file of `{"key": ..., "choices": [...]}`, one line per answered request.

    Each line goes out in a single `write` on an `O_APPEND` descriptor, so a killed run leaves whole lines only; a
    last line without its newline (a write cut short by a crash) is dropped on load, any other bad line is an error.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._entries = self._load()

    def _load(self) -> dict[str, list[str]]:
        if not self.path.exists():
            return {}
        raw = self.path.read_bytes()
        complete, _, partial = raw.rpartition(b"\n")
        if partial:
            with self.path.open("r+b") as handle:
                handle.truncate(len(complete) + 1 if complete else 0)
        entries: dict[str, list[str]] = {}
        for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
            try:
                record = json.loads(line)
                key, choices = record["key"], record["choices"]
                if not isinstance(key, str) or not isinstance(choices, list):
                    raise TypeError("wrong types")
            except (ValueError, KeyError, TypeError) as err:
                raise CacheFileError(
                    f"malformed response cache {self.path} line {number} ({err}); delete the line or the file"
                ) from None
            entries[key] = [str(choice) for choice in choices]
        return entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> list[str] | None:
        return self._entries.get(key)

    def put(self, key: str, choices: list[str]) -> None:
        line = json.dumps({"key": key, "choices": choices}, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(descriptor, line.encode())
            finally:
                os.close(descriptor)
            self._entries[key] = choices


class ChatClient:
    """Samples answers from one model behind an OpenAI-compatible endpoint, through a `ResponseCache`."""

    def __init__(
        self,
        base_url: str | None,
        model: str,
        cache: ResponseCache,
        *,
        concurrency: int = 8,
        extra_body: dict[str, Any] | None = None,
        max_attempts: int = 6,
        timeout_s: float = 60.0,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        if concurrency < 1 or max_attempts < 1:
            raise ValueError("concurrency and max_attempts must be at least 1")
        self.endpoint = base_url or "https://api.openai.com/v1"
        self.model = model
        self.extra_body = json.dumps(extra_body or {}, sort_keys=True, ensure_ascii=False)
        self.cache = cache
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.requests_sent = 0
        self._count_lock = threading.Lock()
        self._client = openai.OpenAI(
            base_url=base_url,
            api_key=os.environ.get("OPENAI_API_KEY") or LOCAL_API_KEY,
            max_retries=0,
            timeout=timeout_s,
        )

    def sample(
        self, messages: Sequence[dict[str, str]], samples: int, temperature: float, max_tokens: int
    ) -> list[str]:
        """`samples` answers to one conversation: asks for all with `n`, then again for what a server left out.

        Servers that ignore `n` (e.g. `transformers serve`) answer one choice per request; the request for the rest
        differs by `sample_offset`, so each lands in the cache under its own key and a rerun replays the same sequence.
        """
        frozen = freeze_messages(messages)
        answers: list[str] = []
        while len(answers) < samples:
            request = ChatRequest(
                self.model, frozen, temperature, max_tokens, samples - len(answers), len(answers), self.extra_body
            )
            answers.extend(self._cached(request))
        return answers[:samples]

    def sample_many(
        self,
        conversations: Sequence[Sequence[dict[str, str]]],
        samples: int,
        temperature: float,
        max_tokens: int,
        description: str = "chat",
    ) -> list[list[str]]:
        """`sample` for every conversation, `concurrency` at a time, in input order; the first failure stops all."""
        with (
            tqdm(total=len(conversations), desc=description, unit="question") as progress,
            ThreadPoolExecutor(max_workers=self.concurrency) as pool,
        ):
            futures = [pool.submit(self.sample, c, samples, temperature, max_tokens) for c in conversations]
            for future in futures:
                future.add_done_callback(lambda _: progress.update())
            try:
                return [future.result() for future in futures]
            except BaseException:
                pool.shutdown(wait=False, cancel_futures=True)
                raise

    def _cached(self, request: ChatRequest) -> list[str]:
        key = request.cache_key()
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        choices = self._complete(request)
        self.cache.put(key, choices)
        return choices

    def _complete(self, request: ChatRequest) -> list[str]:
        last_error: Exception | None = None
        for attempt in range(self.max_attempts):
            if attempt:
                delay = min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1))
                time.sleep(delay * random.uniform(0.5, 1.0))
            with self._count_lock:
                self.requests_sent += 1
            try:
                response = self._client.chat.completions.create(
                    model=request.model,
                    messages=request.api_messages(),
                    temperature=request.temperature,
                    max_tokens=request.max_tokens,
                    n=request.n,
                    extra_body=json.loads(request.extra_body) or None,
                )
            except (openai.APIConnectionError, openai.RateLimitError) as err:
                last_error = err
            except openai.APIStatusError as err:
                if err.status_code not in RETRYABLE_STATUS and err.status_code < 500:
                    raise ChatClientError(f"{self.endpoint} refused the request: {_describe(err)}") from None
                last_error = err
            except openai.APIError as err:  # e.g. a body that is not a chat completion
                raise ChatClientError(f"{self.endpoint} gave an unusable answer: {_describe(err)}") from None
            else:
                if not response.choices:
                    raise ChatClientError(f"{self.endpoint} answered with no choices for model {request.model!r}")
                return [choice.message.content or "" for choice in response.choices]
        raise ChatClientError(
            f"{self.endpoint} did not answer after {self.max_attempts} attempts: {_describe(last_error)}"
        )


def _describe(error: Exception | None) -> str:
    """The error's type and first line (API error bodies can span lines)."""
    if error is None:
        return "no attempt made"
    status = getattr(error, "status_code", None)
    prefix = f"HTTP {status} " if status is not None else ""
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{prefix}{type(error).__name__}: {message}".rstrip(": ")
