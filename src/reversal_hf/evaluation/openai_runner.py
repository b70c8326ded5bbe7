"""The evaluators' `--backend openai`: a model at an OpenAI (or compatible) endpoint as a `Runner`.

Greedy generations are temperature-0 completions (the paper's evaluation); Exp 2's sampled answers are chat
completions, `n` at a time. A completion's log-prob comes from the
completions endpoint with `echo=True, logprobs=0`: the endpoint returns the prompt's own tokens with their log-probs
and character offsets, and the completion's log-prob is the sum over the tokens from the prompt's end. Chat models
have no echo, so they give generations only. Every answer is cached (`openai_api.ResponseCache`), so an interrupted
evaluation resumes without paying twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from reversal_hf.evaluation.batching import largest_budgets, once_each
from reversal_hf.evaluation.errors import EvaluationError, LogprobsUnavailableError
from reversal_hf.openai_api import OpenAIAPIError, ResponseCache, chat_choices, one_line_errors, run_concurrently

if TYPE_CHECKING:
    import openai

DEFAULT_CONCURRENCY = 8
R = TypeVar("R")


def greedy_generation(
    client: openai.OpenAI, cache: ResponseCache, model: str, prompt: str, max_tokens: int, *, chat: bool = False
) -> str:
    """The prompt's temperature-0 continuation: `/completions`, or the assistant's reply to it as the user turn."""
    if chat:
        messages = [{"role": "user", "content": prompt}]
        return chat_choices(client, cache, model=model, messages=messages, max_tokens=max_tokens, temperature=0)[0]
    request = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    text = cache.get(request)
    if text is None:
        with one_line_errors(client):
            text = client.completions.create(**request).choices[0].text
        cache.put(request, text)
    return text


def completion_score(
    client: openai.OpenAI, cache: ResponseCache, model: str, prompt: str, completion: str
) -> tuple[float, int]:
    """(log P(completion | prompt), token count): the summed log-probs of the echoed tokens that start at or after the
    prompt's end, and how many they are.

    A token that spans the boundary (the prompt's last characters merged with the completion's first) cannot be
    split, and is an error rather than a silently shifted score; our completions start with a space, where OpenAI's
    encodings start a new token.
    """
    request = {
        "model": model,
        "prompt": prompt + completion,
        "max_tokens": 1,
        "temperature": 0,
        "echo": True,
        "logprobs": 0,
    }
    logprobs = cache.get(request)
    if logprobs is None:
        with one_line_errors(client):
            choice = client.completions.create(**request).choices[0]
        if choice.logprobs is None or choice.logprobs.text_offset is None or choice.logprobs.token_logprobs is None:
            raise OpenAIAPIError(f"{client.base_url} returned no echoed log-probs for model {model!r}")
        logprobs = {"text_offset": choice.logprobs.text_offset, "token_logprobs": choice.logprobs.token_logprobs}
        cache.put(request, logprobs)
    start, end = len(prompt), len(prompt) + len(completion)
    offsets = logprobs["text_offset"]
    if any(offset < start < next_offset for offset, next_offset in itertools.pairwise(offsets)):
        raise OpenAIAPIError(
            f"{model}: a token spans the end of the prompt {prompt[-20:]!r}; its log-prob cannot be split"
        )
    values = [
        logprob
        for offset, logprob in zip(offsets, logprobs["token_logprobs"], strict=True)
        if start <= offset < end and logprob is not None
    ]
    return sum(values), len(values)


def sample_answers(client: openai.OpenAI, cache: ResponseCache, request: dict[str, Any], samples: int) -> list[str]:
    """`samples` answers to one chat request: asks for all with `n`, then again for what a server left out.

    Servers that ignore `n` (e.g. `transformers serve`) answer one choice per request; each request for the rest asks
    for fewer, so it lands in the cache under its own key and a rerun replays the same answers.
    """
    answers: list[str] = []
    while len(answers) < samples:
        answers.extend(chat_choices(client, cache, **request, n=samples - len(answers)))
    return answers[:samples]


def token_upper_bound(text: str) -> int:
    """At least the tokens of `text` in any of OpenAI's byte-level BPE encodings (each token covers a byte or more);
    their vocabularies download at run time (tiktoken), which nothing here may do."""
    return len(text.encode())


@dataclass
class OpenAIRunner:
    """The evaluators' `Runner` on a model at an OpenAI-compatible endpoint: temperature-0 generations, completion
    log-probs from the completions endpoint's echo (`LogprobsUnavailableError` for a chat model, which has none), and
    sampled chat answers."""

    client: openai.OpenAI
    cache: ResponseCache
    model: str
    chat: bool = False
    concurrency: int = DEFAULT_CONCURRENCY

    def _concurrently(self, function: Callable[[Any], R], items: Sequence[Any], what: str) -> list[R]:
        return run_concurrently(function, items, concurrency=self.concurrency, description=f"{self.model} {what}")

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        """One request per distinct prompt, with the largest budget it is asked with."""
        budgets = largest_budgets(prompts, max_new_tokens)
        texts = self._concurrently(
            lambda item: greedy_generation(self.client, self.cache, self.model, *item, chat=self.chat),
            list(budgets.items()),
            "generations",
        )
        by_prompt = dict(zip(budgets, texts, strict=True))
        return [by_prompt[prompt] for prompt in prompts]

    def scores(
        self, prompts: Sequence[str], completions: Sequence[str], deduplicate: bool = True
    ) -> list[tuple[float, int]]:
        if self.chat:
            raise LogprobsUnavailableError(
                f"{self.model} is a chat model: the chat endpoint gives no log-probs of a given completion"
            )

        def score(pairs: list[tuple[str, str]]) -> list[tuple[float, int]]:
            return self._concurrently(
                lambda pair: completion_score(self.client, self.cache, self.model, *pair), pairs, "log-probs"
            )

        pairs = list(zip(prompts, completions, strict=True))
        return once_each(pairs, score) if deduplicate else score(pairs)

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        raise EvaluationError(f"{self.model}: per-token losses (prompt tuning, Appendix B.8) need a local model")

    def token_count(self, text: str) -> int:
        return token_upper_bound(text)

    def sample(self, conversations: Sequence[list[dict[str, str]]], samples: int, **sampling: Any) -> list[list[str]]:
        """`sample_answers` for each conversation from the chat endpoint, `concurrency` conversations at a time."""

        def answers_to(messages: list[dict[str, str]]) -> list[str]:
            request = {"model": self.model, "messages": messages, **sampling}
            return sample_answers(self.client, self.cache, request, samples)

        return self._concurrently(answers_to, conversations, "samples")
