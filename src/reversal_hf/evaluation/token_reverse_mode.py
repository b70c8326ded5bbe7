"""Reverse-mode questions for a `token` reverse-trained run, asked and scored in token ids.

A `token` run trained on documents whose token ids are reversed, a "language" no text can stand for (decoding reversed
ids and encoding the result again gives other ids). Its reverse-mode question is a held-out name-first row tokenized
as training tokenizes it, reversed, and cut before the name (`token_reverse_mode_question`); the model generates as
many tokens as the name has, and these, put back in reading order and decoded, are scored by the same exact-match rule
against the name's tokens decoded. The likelihood test compares the reversed name's log-prob with every other fact's
name under the same template, each written into the same text. The metrics have the shape of the text transforms'
(`exp1`).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from reversal_hf.data.reversal_transforms import add_reversed_token_rows, token_reverse_mode_question
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.exp1 import (
    REVERSE_MODE_NOTE,
    REVERSE_MODE_SPLITS,
    Exp1Data,
    other_facts_completions,
    per_fact_test,
    with_scores,
)
from reversal_hf.evaluation.generation import greedy_generate_ids
from reversal_hf.evaluation.metrics import exact_match
from reversal_hf.evaluation.runner import BatchedRunner, Runner
from reversal_hf.evaluation.scoring import score_token_completions
from reversal_hf.metrics.reversal_accuracy.reversal_accuracy import is_exact_match


def _id_text(ids: list[int]) -> str:
    """Token ids as a delimited string, so that "these ids stand together in that document" is a substring test."""
    return "," + ",".join(map(str, ids)) + ","


def _questions(frame: pd.DataFrame, tokenizer: Any, given_away: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame's name-first rows as token questions (`prompt_ids`, `completion_ids`; `completion` the name, `text`
    the fact): those to ask, and those whose prompt ids (its special tokens aside) stand in a training document."""
    rows = frame[frame["direction"] == "p2d"].reset_index(drop=True)
    texts = (rows["prompt"] + rows["completion"]).tolist()
    pairs = [token_reverse_mode_question(t, n, tokenizer) for t, n in zip(texts, rows["name"], strict=True)]
    special_ids = set(tokenizer.all_special_ids)
    questions = rows.assign(
        text=texts,
        completion=rows["name"],
        prompt=[tokenizer.decode(prompt) for prompt, _ in pairs],
        prompt_ids=[prompt for prompt, _ in pairs],
        completion_ids=[completion for _, completion in pairs],
    )
    leaked = [_id_text([i for i in prompt if i not in special_ids]) in given_away for prompt, _ in pairs]
    leaked = pd.Series(leaked, dtype=bool)
    return questions[~leaked].reset_index(drop=True), questions[leaked]


def _reading_order(tokenizer: Any, reversed_ids: list[int]) -> str:
    return tokenizer.decode(reversed_ids[::-1], skip_special_tokens=True)


def evaluate_token_reverse_mode(data: Exp1Data, runner: Runner, training: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """Exact match and the likelihood test on token reverse-mode questions (keys: the name-first splits, as for the
    text transforms); `training` is the run's training split, whose token-reversed documents decide what is left out.
    """
    if not isinstance(runner, BatchedRunner):
        raise EvaluationError("reversal_transform token: reverse-mode questions need a local model (backend hf)")
    model, tokenizer = runner.model, runner.tokenizer
    documents = add_reversed_token_rows(training, tokenizer)["input_ids"]
    given_away = "\n".join(map(_id_text, documents))
    exact, likelihood, excluded, tables = {}, {}, {}, []
    for key in REVERSE_MODE_SPLITS:
        frame, _ = _questions(data.splits[key], tokenizer, given_away)
        pool, left_out = _questions(data.full[key], tokenizer, given_away)
        excluded[key] = {"n": len(left_out), "templates": sorted(set(left_out["template_id"].tolist()))}
        lengths = frame["completion_ids"].map(len).tolist()
        generated = greedy_generate_ids(
            model, frame["prompt_ids"].tolist(), tokenizer.pad_token_id, max(lengths), runner.batch_size, key
        )
        generations = [_reading_order(tokenizer, ids[:n]) for ids, n in zip(generated, lengths, strict=True)]
        references = [_reading_order(tokenizer, ids) for ids in frame["completion_ids"]]
        exact[key] = exact_match(generations, references)
        random_names = other_facts_completions(frame, pool, f"reverse_mode/{key}")
        prompts = frame["prompt_ids"].tolist()
        sequences = [(p + c, len(p)) for p, c in zip(prompts, frame["completion_ids"], strict=True)]
        sequences += [
            (prompt + token_reverse_mode_question(text.replace(name, other), other, tokenizer)[1], len(prompt))
            for prompt, text, name, others in zip(prompts, frame["text"], frame["name"], random_names, strict=True)
            for other in others
        ]
        scores = score_token_completions(model, sequences, tokenizer.pad_token_id)
        scored = with_scores(
            frame, frame["completion"].tolist(), random_names, scores[: len(frame)], scores[len(frame) :]
        ).assign(
            split=f"reverse_mode/{key}",
            generation=generations,
            exact_match=[is_exact_match(g, r) for g, r in zip(generations, references, strict=True)],
        )
        likelihood[key] = per_fact_test(scored)
        tables.append(scored)
    metrics = {
        "transform": "token",
        "note": REVERSE_MODE_NOTE,
        "exact_match": exact,
        "likelihood": likelihood,
        "excluded": excluded,
    }
    return metrics, pd.concat(tables, ignore_index=True)
