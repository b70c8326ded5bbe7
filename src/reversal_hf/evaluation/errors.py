"""The one error type of evaluation: bad input (model file, tokenizer, dataset, revision, argument) on one line."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Bad input to an evaluation (missing model file, tokenizer, dataset or revision), as a one-line message."""


class LogprobsUnavailableError(EvaluationError):
    """The model gives no log-probabilities of a given completion (a chat endpoint): the likelihood test is skipped
    and the metrics say why, rather than carry a number in its place."""


class SamplingNeedsAnEndpointError(EvaluationError):
    """Exp 2's sampled chat answers (the paper's temperature-1 samples) come from a model at an endpoint; a local
    model is scored by the likelihood of the names instead."""

    def __init__(self, model_kind: str) -> None:
        super().__init__(f"sampled chat answers need a model at an endpoint (backend openai), not {model_kind}")


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (they can span a page)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
