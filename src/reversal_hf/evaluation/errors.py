"""The one error type of evaluation: bad input (model file, tokenizer, dataset, revision, argument) on one line."""

from __future__ import annotations


class EvaluationError(ValueError):
    """Bad input to an evaluation (missing model file, tokenizer, dataset or revision), as a one-line message."""


class LogprobsUnavailableError(EvaluationError):
    """The model gives no log-probabilities of a given completion (a chat endpoint): the likelihood test is skipped
    and the metrics say why, rather than carry a number in its place."""


def first_line(error: BaseException) -> str:
    """The first line of a library's error message (they can span a page)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
