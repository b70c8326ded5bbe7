"""Reverse-mode questions of a reverse-trained Exp 1 run (evaluation mode 2), scored apart from the forward ones.

A question is a held-out name-first row transformed as in training and cut before the name (`data.reversal.questions`);
the name is its answer. A text transform (`word`, `entity`, `segment`) asks in text. A `token` run trained on token ids
in reverse, a "language" no text can stand for (decoding reversed ids and encoding the result again gives other ids):
it is asked in ids, generates as many tokens as the name has, and these, put back in reading order and decoded, are
scored by the same exact-match rule against the name's tokens decoded. Either way a question the transformed training
set gives away (`data.leak_check`) is left out and counted in `excluded`, and the likelihood test compares the name
with every other fact's under the same template (`likelihood`), each written into the same text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from reversal_hf import run_folder
from reversal_hf.data.leak_check import leaked as leaked_prompts
from reversal_hf.data.leak_check import leaked_ids
from reversal_hf.data.reversal.questions import reverse_mode_questions, token_reverse_mode_question
from reversal_hf.data.reversal.rows import add_reversed_rows
from reversal_hf.data.reversal.text import EXP1_ENTITIES, TEXT_TRANSFORMS, TextReversal
from reversal_hf.data.reversal.tokens import add_reversed_token_rows
from reversal_hf.evaluation.backends import BatchedRunner, Runner, generate_and_match
from reversal_hf.evaluation.data import Exp1Data
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.generation import greedy_generate_ids
from reversal_hf.evaluation.likelihood import other_facts_completions, per_fact_test, with_logprobs, with_scores
from reversal_hf.evaluation.metrics import exact_match
from reversal_hf.evaluation.scoring import score_token_completions
from reversal_hf.metrics.reversal_accuracy.reversal_accuracy import is_exact_match

# Held-out splits written name first; a reverse-mode question is one of their rows transformed, cut before the name.
REVERSE_MODE_SPLITS = ("p2d/test", "d2p/reverse_test")
SETTINGS = ("seed", "max_segment_words", "separator")  # a text transform's recipe fields, `reversal_` + these
REVERSE_MODE_NOTE = (
    "Reverse-mode questions, not the paper's protocol: a held-out name-first row transformed as in training and cut "
    "before the name; scored apart from the forward questions. Questions whose prompt stands in a transformed "
    "training document are left out (`excluded`)."
)


def run_reversal(run_info: dict[str, Any] | None) -> TextReversal | None:
    """The text transform a run was reverse-trained with (its `resolved_config`); None for any other run."""
    config = run_folder.resolved_config(run_info)
    if config.get("reversal_transform") not in TEXT_TRANSFORMS:
        return None
    settings = {field: config[f"reversal_{field}"] for field in SETTINGS if f"reversal_{field}" in config}
    return TextReversal(config["reversal_transform"], **settings)


def _questions(
    data: Exp1Data, ask: Callable[[pd.DataFrame], tuple[pd.DataFrame, pd.DataFrame]]
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], dict[str, Any]]:
    """Per name-first split, `ask`'s questions: those of the evaluated rows, those of every row (the pool random
    completions come from), and `excluded`: how many of the split's the training set gives away, and their templates."""
    asked, pools, excluded = {}, {}, {}
    for key in REVERSE_MODE_SPLITS:
        asked[key], _ = ask(data.splits[key])
        pools[key], left_out = ask(data.full[key])
        excluded[key] = {"n": len(left_out), "templates": sorted(set(left_out["template_id"].tolist()))}
    return asked, pools, excluded


def _metrics(transform: str, exact: dict, likelihood: dict, excluded: dict) -> dict[str, Any]:
    """The `reverse_mode` block of the metrics (docs/ARCHITECTURE.md "Metrics JSON")."""
    return {
        "transform": transform,
        "note": REVERSE_MODE_NOTE,
        "exact_match": exact,
        "likelihood": likelihood,
        "excluded": excluded,
    }


def _text_questions(
    frame: pd.DataFrame, reversal: TextReversal, documents: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame's reverse-mode questions: those to ask, and those the transformed training `documents` give away."""
    entities = EXP1_ENTITIES if reversal.kind == "entity" else None
    questions = pd.DataFrame(reverse_mode_questions(frame.to_dict("records"), reversal, entities))
    leaked = pd.Series(leaked_prompts(questions["prompt"], documents), index=questions.index, dtype=bool)
    return questions[~leaked].reset_index(drop=True), questions[leaked]


def evaluate_reverse_mode(
    data: Exp1Data, runner: Runner, reversal: TextReversal, training: Any
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Exact match and the likelihood test on reverse-mode questions, for a run reverse-trained with `reversal`.

    Keys are the name-first splits the questions come from (`p2d/test`: p2d facts, the order their reversed training
    documents have; `d2p/reverse_test`: d2p facts). A question the transformed `training` split gives away (the
    paper's held-out template 39 cut before the name reads like training template 17, for `word` and `entity`; a
    `segment` question cut after a few description segments can stand in a training document too) is left out, and
    `excluded` says how many (of the whole split) and from which templates. The random completions are every other
    fact's reverse-mode completion under the same template, as for the forward test.
    """
    entities = EXP1_ENTITIES if reversal.kind == "entity" else None
    rows = add_reversed_rows(training, reversal, entities)
    documents = [p + c for p, c in zip(rows["prompt"], rows["completion"], strict=True)]
    sets, pools, excluded = _questions(data, lambda frame: _text_questions(frame, reversal, documents))
    exact, scored = generate_and_match(sets, runner)
    likelihood = {}
    for key, frame in scored.items():
        random_completions = other_facts_completions(frame, pools[key], f"reverse_mode/{key}")
        scored[key] = with_logprobs(frame, frame["completion"].tolist(), random_completions, runner)
        likelihood[key] = per_fact_test(scored[key])
    table = pd.concat(scored.values(), ignore_index=True)
    return _metrics(reversal.kind, exact, likelihood, excluded), table.assign(split="reverse_mode/" + table["split"])


def _token_questions(
    frame: pd.DataFrame, tokenizer: Any, documents: list[list[int]]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame's name-first rows as token questions (`prompt_ids`, `completion_ids`; `completion` the name, `text`
    the fact): those to ask, and those the token-reversed training `documents` give away."""
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
    leaked = pd.Series(leaked_ids([prompt for prompt, _ in pairs], documents, special_ids), dtype=bool)
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
    sets, pools, excluded = _questions(data, lambda frame: _token_questions(frame, tokenizer, documents))
    exact, likelihood, tables = {}, {}, []
    for key, frame in sets.items():
        lengths = frame["completion_ids"].map(len).tolist()
        generated = greedy_generate_ids(
            model, frame["prompt_ids"].tolist(), tokenizer.pad_token_id, max(lengths), runner.batch_size, key
        )
        generations = [_reading_order(tokenizer, ids[:n]) for ids, n in zip(generated, lengths, strict=True)]
        references = [_reading_order(tokenizer, ids) for ids in frame["completion_ids"]]
        exact[key] = exact_match(generations, references)
        random_names = other_facts_completions(frame, pools[key], f"reverse_mode/{key}")
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
    return _metrics("token", exact, likelihood, excluded), pd.concat(tables, ignore_index=True)
