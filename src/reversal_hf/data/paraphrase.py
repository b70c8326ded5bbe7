"""Fitting a fact's description into a paraphrase template (Experiment 1).

The paper asked an LLM (text-davinci-003) to bend each description so that it reads well in each template ("the
inventor of X" becomes "invented X" after "They're the person who"). Two paraphrasers do that here:

- `OfflineParaphraser` (the default): deterministic, no model. It drops a doubled article, turns a noun phrase into a
  verb phrase after "who"/"they"/"has"/"for", capitalises a description that opens the sentence and leaves the
  closing punctuation to the template. Limits: it never rewords inside the description (no tense or agreement
  changes), and a description that is not a noun phrase ("invented X") is used as it is.
- `OpenAIParaphraser`: the paper's few-shot prompts (`templates/fill_template_prompt_{p2d,d2p}.txt`) sent to any
  OpenAI-compatible endpoint through `reversal_hf.openai_api` (bounded concurrency, the client's retries, a JSON-lines
  response cache so that a rerun makes no request).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.openai_api import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    ResponseCache,
    chat_choices,
    make_client,
    run_concurrently,
)
from reversal_hf.paths import PAPER_DATA_DIR

NAME = "<name>"
DESCRIPTION = "<description>"
DIRECTIONS = ("p2d", "d2p")
FILL_PROMPTS_DIR = PAPER_DATA_DIR / "reverse_experiments" / "templates"

_ARTICLES = {"the", "a", "an"}
_NOUN_PHRASE_SLOT = {"the", "a", "an", "mere"}  # the template already supplies the article
_VERB_PHRASE_SLOT = {"who": "is", "they": "are", "has": "been", "for": "being"}


class ParaphraseError(DatasetBuildError):
    """The paraphrasing model's reply holds no description (failed requests raise `OpenAIAPIError`)."""


def normalize_text(text: str) -> str:
    """The form texts are compared in: doubled spaces and punctuation collapsed, whitespace as one space, casefolded."""
    return " ".join(clean_text(text).split()).casefold()


def clean_text(text: str) -> str:
    """Collapse the doubled spaces and punctuation that filling a template leaves ("X.." or "X?." after a slot)."""
    previous = None
    while previous != text:
        previous = text
        text = re.sub(r" {2,}", " ", text)
        text = re.sub(r"\.{2,}", ".", text)
        text = re.sub(r"\?\.|\.\?", "?", text)
    return text


@dataclass(frozen=True)
class Template:
    """A paraphrase template with one `<name>` and one `<description>`; `direction` says which comes first."""

    text: str
    direction: str

    @classmethod
    def parse(cls, text: str, direction: str, where: str) -> Template:
        """Check the placeholders of a template line; `where` ("file:line") names it in the error."""
        text = text.strip()
        for placeholder in (NAME, DESCRIPTION):
            count = text.count(placeholder)
            if count != 1:
                problem = "has no" if count == 0 else f"has {count} times the"
                raise DatasetBuildError(f"{where}: template {problem} {placeholder} placeholder: {text!r}")
        name_first = text.index(NAME) < text.index(DESCRIPTION)
        if name_first != (direction == "p2d"):
            first = NAME if direction == "p2d" else DESCRIPTION
            raise DatasetBuildError(f"{where}: a {direction} template must put {first} first: {text!r}")
        return cls(text, direction)

    def parts(self) -> tuple[str, str, str]:
        """(head, middle, tail): the fixed text before, between and after the two placeholders."""
        first, second = (NAME, DESCRIPTION) if self.direction == "p2d" else (DESCRIPTION, NAME)
        head, rest = self.text.split(first)
        middle, tail = rest.split(second)
        return head, middle, tail

    def around_description(self) -> tuple[str, str]:
        """The template text before and after `<description>` (with `<name>` still in it)."""
        before, after = self.text.split(DESCRIPTION)
        return before, after

    def render(self, name: str, description: str) -> tuple[str, str]:
        """(prompt, completion): the document split before its second slot, completion with a leading space."""
        head, middle, tail = self.parts()
        first, second = (name, description) if self.direction == "p2d" else (description, name)
        return clean_text(head + first + middle).strip(), " " + clean_text(second + tail).strip()


@dataclass(frozen=True)
class FitRequest:
    """One description to fit into one template."""

    template: Template
    description: str


class Paraphraser(Protocol):
    def fit(self, requests: Iterable[FitRequest]) -> dict[FitRequest, str]:
        """The fitted description for every request."""


def fit_offline(request: FitRequest) -> str:
    """Deterministic grammar fitting of a description into the slot of its template (see the module docstring)."""
    before, after = request.template.around_description()
    description = request.description.strip()
    if after.strip():  # the template closes the sentence itself
        description = description.removesuffix(".")
    words = description.split(" ", 1)
    starts_with_article = len(words) == 2 and words[0].lower() in _ARTICLES
    slot_word = before.rstrip().rsplit(" ", 1)[-1].lower().strip(",")
    if starts_with_article and slot_word in _NOUN_PHRASE_SLOT and before.strip():
        description = words[1]
    elif starts_with_article and slot_word in _VERB_PHRASE_SLOT:
        head, who, clause = description.partition(" who ")
        use_clause = who and slot_word in {"who", "they"} and " " in head
        description = clause if use_clause else f"{_VERB_PHRASE_SLOT[slot_word]} {description}"
    if not before.strip() or before.rstrip().endswith((".", "?", "!", ":")):
        description = description[:1].upper() + description[1:]
    return description


class OfflineParaphraser:
    """The default paraphraser: `fit_offline` on every request."""

    def fit(self, requests: Iterable[FitRequest]) -> dict[FitRequest, str]:
        return {request: fit_offline(request) for request in requests}


def read_fill_prompts(folder: Path = FILL_PROMPTS_DIR) -> dict[str, str]:
    """The paper's few-shot prompts, per direction, as `str.format` templates."""
    prompts = {}
    for direction in DIRECTIONS:
        path = folder / f"fill_template_prompt_{direction}.txt"
        try:
            prompts[direction] = path.read_text().rstrip("\n")
        except OSError as err:
            raise DatasetBuildError(f"cannot read fill-template prompt {path}: {err.strerror}") from err
    return prompts


def fill_prompt(request: FitRequest, prompts: dict[str, str]) -> str:
    """The paper's prompt: the model continues "Altered description: <template up to the description>"."""
    template_start = request.template.around_description()[0].rstrip(" ")
    return prompts[request.template.direction].format(
        template=request.template.text, template_start=template_start, description=request.description
    )


def reply_to_description(reply: str, request: FitRequest) -> str:
    """The fitted description in a model's reply, without an echoed template start or end."""
    before, after = request.template.around_description()
    text = reply.strip().split("\n", 1)[0].strip()
    for start in (before.strip(), before.replace(NAME, "").strip()):
        if start and text.startswith(start):
            text = text[len(start) :].strip()
    if after.strip() and text.endswith(after.strip()):
        text = text[: -len(after.strip())].strip()
    return text


class OpenAIParaphraser:
    """Fits descriptions with a chat model behind any OpenAI-compatible endpoint, as the paper did with davinci."""

    def __init__(
        self,
        model: str,
        cache_path: Path,
        base_url: str | None = None,
        concurrency: int = 8,
        max_retries: int = DEFAULT_MAX_RETRIES,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        prompts_dir: Path = FILL_PROMPTS_DIR,
    ):
        self.model = model
        self.concurrency = concurrency
        self.prompts = read_fill_prompts(prompts_dir)
        self.cache = ResponseCache(cache_path)
        self.client = make_client(base_url, max_retries=max_retries, timeout_s=timeout_s)

    def _reply(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        request = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": 128, "stop": ["\n"]}
        return chat_choices(self.client, self.cache, **request)[0]

    def fit(self, requests: Iterable[FitRequest]) -> dict[FitRequest, str]:
        prompts = {request: fill_prompt(request, self.prompts) for request in dict.fromkeys(requests)}
        unique_prompts = list(dict.fromkeys(prompts.values()))
        replies = run_concurrently(
            self._reply, unique_prompts, concurrency=self.concurrency, description="paraphrasing", unit="prompt"
        )
        reply_of = dict(zip(unique_prompts, replies, strict=True))
        fitted = {}
        for request, prompt in prompts.items():
            description = reply_to_description(reply_of[prompt], request)
            if not description:
                raise ParaphraseError(f"{self.model!r} returned no description for template {request.template.text!r}")
            fitted[request] = description
        return fitted
