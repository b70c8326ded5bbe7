"""Experiment 1 evaluation: exact match on every split the paper reports, and the "increased likelihood" test.

Optionally the in-context version of Appendix B.6 (the fact in the prompt, 3-shot: models reverse in context) and the
prompt-tuning losses of Appendix B.8. Writes `eval/exp1_metrics.json` (docs/ARCHITECTURE.md "Metrics JSON") and a
per-example table `eval/exp1_examples.parquet`; the metrics file is written last, so its presence means done.

The likelihood test scores each held-out prompt's correct completion against every other fact's completion under the
same template (`other_facts_completions`), never the correct one: in the paper's
`p2d_reverse_prompts_test_randomized` (one random completion per prompt), 13 of the 300 "random" names are the correct
one. The paper-file variant is reported beside ours, for fidelity only.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reversal_hf import run_folder
from reversal_hf.data.leak_check import normalize_text
from reversal_hf.data.reversal_transforms import (
    DEFAULT_MAX_SEGMENT_WORDS,
    DEFAULT_SEPARATOR,
    EXP1_ENTITIES,
    TEXT_TRANSFORMS,
    TextReversal,
    add_reversed_rows,
    reverse_mode_questions,
)
from reversal_hf.evaluation.arguments import EvaluatorArguments
from reversal_hf.evaluation.data import evaluated_run, limited_indices, load_split
from reversal_hf.evaluation.errors import EvaluationError, LogprobsUnavailableError
from reversal_hf.evaluation.metrics import likelihood_test
from reversal_hf.evaluation.runner import Runner, generate_and_match, make_runner

EXACT_MATCH_SPLITS = (
    "p2d/test",
    "p2d/reverse_test",
    "p2d/reverse_test_randomized",
    "d2p/test",
    "d2p/reverse_test",
    "d2p/reverse_test_randomized",
    "both/test",
    "all/validation",
)
LIKELIHOOD_SPLITS = ("p2d/reverse_test", "d2p/reverse_test")
PAPER_RANDOM_SPLIT = "p2d/reverse_test_randomized"
PAPER_RANDOM_KEY = f"{PAPER_RANDOM_SPLIT}_paper"
IN_CONTEXT_SHOTS = 3
# Appendix B.6 (Table 4): the fact stated in one order, then a question asked in the same or the reverse order.
WHO_IS = "Question: Who is {description}?\nAnswer: The person you are asking for is"
KNOWN_FOR = "Question: What is {name} known for?\nAnswer: {name} is known for being"
STATEMENTS = {"p2d": "{name} is {description}.", "d2p": "{description} is {name}."}


@dataclass(kw_only=True)
class Exp1Options:
    """What Experiment 1 adds to a run's evaluation (`eval exp1` and `eval run`)."""

    seed: int = field(default=0, metadata={"help": "seed of the in-context shots and the B.8 shuffled prompts"})
    in_context: bool = field(default=False, metadata={"help": "also the in-context evaluation (Appendix B.6)"})


@dataclass(kw_only=True)
class Exp1Arguments(EvaluatorArguments, Exp1Options):
    """`reversal-hf eval exp1`."""

    prompt_tuning: bool = field(default=False, metadata={"help": "also the prompt-tuning losses (Appendix B.8)"})


@dataclass(frozen=True)
class Exp1Data:
    """The splits an evaluation reads, as DataFrames keyed `config/split`: `splits` are the evaluated rows (limited
    for quick runs), `full` every row (the pools random completions, shots and prompt-tuning rows come from)."""

    splits: dict[str, pd.DataFrame]
    full: dict[str, pd.DataFrame]

    @classmethod
    def load(
        cls,
        dataset: str,
        revision: str | None,
        max_examples_per_split: int | None = None,
        keys: Sequence[str] = EXACT_MATCH_SPLITS,
    ) -> Exp1Data:
        """The `keys` splits (`p2d/train` too: the default prompt-tuning fact comes from it)."""
        full = {}
        for key in dict.fromkeys((*keys, "p2d/train")):
            config, split = key.split("/")
            full[key] = load_split(dataset, config, split, revision).to_pandas()
        splits = {
            key: full[key].iloc[limited_indices(len(full[key]), max_examples_per_split)].reset_index(drop=True)
            for key in keys
        }
        return cls(splits, full)

    def tuned_fact_sets(self, fact: str, keys: Sequence[str], limit: int | None = None) -> dict[str, pd.DataFrame]:
        """The held-out rows of one fact per split (`limit` evenly spaced rows at most), for a prompt-tuned run: a soft
        prompt tuned on one fact (Appendix B.8) says nothing about the others."""
        sets = {}
        for key in keys:
            rows = self.full[key].query("name == @fact")
            if len(rows):
                sets[key] = rows.iloc[limited_indices(len(rows), limit)].reset_index(drop=True)
        return sets


def _normalized(text: str) -> str:
    return text.strip().casefold()


def other_facts_completions(frame: pd.DataFrame, pool: pd.DataFrame, key: str) -> list[list[str]]:
    """For each row, every other fact's completion under the row's template in `pool` (sorted; never the row's own).

    Why every other fact and not one seeded draw (the paper's design, and ours before): with one random completion
    per prompt the test compares the correct completion against whichever completions the draw happened to pick, and
    a different draw can turn the result; scoring all the others removes the draw altogether, and with 30 facts per
    template it is 29 completions per prompt, more than K = 20 draws would give. The cost is 29 short sequences per
    held-out prompt (8,700 per split of 300 prompts), batched; prompts are shorter than `PREFIX_CACHE_MIN_TOKENS`, so
    batching, not the prefix cache, is what keeps it affordable (a few minutes for SmolLM2-135M on 2 CPU cores).
    Within the template, because the paper's descriptions were bent by an LLM to fit each template: another template's
    completion would be less likely for its grammar alone, and the fact is left as the only difference.
    """
    by_template: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for name, completion, template in zip(pool["name"], pool["completion"], pool["template_id"], strict=True):
        by_template[template].add((name, completion))
    others = []
    for name, completion, template in zip(frame["name"], frame["completion"], frame["template_id"], strict=True):
        row = sorted({c for n, c in by_template[template] if n != name and _normalized(c) != _normalized(completion)})
        if not row:
            raise EvaluationError(f"{key}: no other fact under template {template} to score as a random completion")
        others.append(row)
    return others


def with_scores(
    frame: pd.DataFrame,
    correct: list[str],
    random_completions: list[list[str]],
    correct_scores: Sequence[tuple[float, int]],
    random_scores: Sequence[tuple[float, int]],
) -> pd.DataFrame:
    """The frame with each prompt's correct and random completions and their (summed log-prob, token count) scores
    (`random_scores` flat, row after row): sums and per-token means, each prompt's randoms averaged."""
    scores = iter(random_scores)
    per_row = [[next(scores) for _ in completions] for completions in random_completions]
    return frame.assign(
        correct_completion=correct,
        random_completions=random_completions,
        n_random=[len(completions) for completions in random_completions],
        random_is_correct=[
            any(_normalized(r) == _normalized(c) for r in randoms)
            for randoms, c in zip(random_completions, correct, strict=True)
        ],
        correct_logprob=[total for total, _ in correct_scores],
        correct_tokens=[count for _, count in correct_scores],
        random_logprobs=[[total for total, _ in row] for row in per_row],
        random_tokens=[[count for _, count in row] for row in per_row],
        random_logprob=[sum(total for total, _ in row) / len(row) for row in per_row],
        correct_logprob_per_token=[total / count for total, count in correct_scores],
        random_logprob_per_token=[sum(total / count for total, count in row) / len(row) for row in per_row],
    )


def _with_logprobs(frame: pd.DataFrame, correct: list[str], random_completions: list[list[str]], runner: Runner):
    """`with_scores`, every completion scored by `runner` in one call (so that it batches them all)."""
    prompts = frame["prompt"].tolist()
    random_prompts = [p for p, completions in zip(prompts, random_completions, strict=True) for _ in completions]
    scores = runner.scores(prompts + random_prompts, correct + [c for row in random_completions for c in row])
    return with_scores(frame, correct, random_completions, scores[: len(prompts)], scores[len(prompts) :])


def per_fact_test(frame: pd.DataFrame) -> dict[str, Any]:
    """Average each fact's held-out prompts first (Appendix B.5), then compare correct against random: on summed
    log-probs (the paper's), and in `per_token` on per-token means (a longer completion is less likely for its length
    alone). `facts` names the facts in the order of `differences`, so seeds can be pooled from metrics files."""
    columns = ["correct_logprob", "random_logprob", "correct_logprob_per_token", "random_logprob_per_token"]
    per_fact = frame.groupby("name", sort=True)[columns].mean()
    n_random = int(frame["n_random"].min())
    per_token = likelihood_test(
        per_fact["correct_logprob_per_token"].tolist(), per_fact["random_logprob_per_token"].tolist(), n_random
    )
    summed = likelihood_test(per_fact["correct_logprob"].tolist(), per_fact["random_logprob"].tolist(), n_random)
    return {**summed, "facts": per_fact.index.tolist(), "per_token": per_token}


def _likelihood_columns(key: str, frame: pd.DataFrame, data: Exp1Data, runner: Runner) -> pd.DataFrame:
    """Log-probs of the correct and random completions: every other fact's on reverse tests, the paper's one on its
    randomized file."""
    if key == PAPER_RANDOM_SPLIT:
        reverse = data.full["p2d/reverse_test"]
        correct_by_prompt = dict(zip(reverse["prompt"], reverse["completion"], strict=True))
        missing = [prompt for prompt in frame["prompt"] if prompt not in correct_by_prompt]
        if missing:
            raise EvaluationError(f"{key}: prompt {missing[0]!r} is not in p2d/reverse_test")
        correct = [correct_by_prompt[prompt] for prompt in frame["prompt"]]
        random_completions = [[completion] for completion in frame["completion"]]
    else:
        correct = frame["completion"].tolist()
        random_completions = other_facts_completions(frame, data.full[key], key)
    return _with_logprobs(frame, correct, random_completions, runner)


def evaluate_splits(data: Exp1Data, runner: Runner) -> tuple[dict[str, Any], pd.DataFrame]:
    """Exact match on every split, the likelihood tests, and the per-example table."""
    exact, scored = generate_and_match({key: data.splits[key] for key in EXACT_MATCH_SPLITS}, runner)
    metrics: dict[str, Any] = {"exact_match": exact, "likelihood": {}}
    try:
        for key in (*LIKELIHOOD_SPLITS, PAPER_RANDOM_SPLIT):
            frame = scored[key] = _likelihood_columns(key, scored[key], data, runner)
            result = per_fact_test(frame)
            if key == PAPER_RANDOM_SPLIT:
                result["n_random_is_correct"] = int(frame["random_is_correct"].sum())
            metrics["likelihood"][PAPER_RANDOM_KEY if key == PAPER_RANDOM_SPLIT else key] = result
    except LogprobsUnavailableError as error:  # a chat endpoint: the test was not run, and no number stands in for it
        metrics["likelihood_unavailable"] = str(error)
    return metrics, pd.concat(scored.values(), ignore_index=True)


def _facts(frame: pd.DataFrame) -> list[tuple[str, str]]:
    """Distinct (name, description) pairs in first-seen order."""
    return list(dict.fromkeys(zip(frame["name"], frame["description"], strict=True)))


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def in_context_example(name: str, description: str, order: str, question: str) -> tuple[str, str]:
    """(prompt, target) of Appendix B.6: the fact stated in `order`, then asked in the `same` or `reverse` order."""
    statement = _capitalized(STATEMENTS[order].format(name=name, description=description))
    asks_name = (order == "p2d") == (question == "reverse")
    template, target = (WHO_IS, name) if asks_name else (KNOWN_FOR, description)
    return f"{statement}\n{template.format(name=name, description=description)}", f" {target}"


def in_context_prompts(
    facts: Sequence[tuple[str, str]], order: str, question: str, seed: int, limit: int | None = None
) -> pd.DataFrame:
    """One prompt per fact, each after `IN_CONTEXT_SHOTS` solved examples of other facts (seeded)."""
    if len(facts) <= IN_CONTEXT_SHOTS:
        raise EvaluationError(f"in-context {order}: needs more than {IN_CONTEXT_SHOTS} facts, got {len(facts)}")
    rng = random.Random(f"{seed}:in_context:{order}:{question}")
    rows = []
    for index in limited_indices(len(facts), limit):
        name, description = facts[index]
        shots = rng.sample([fact for i, fact in enumerate(facts) if i != index], IN_CONTEXT_SHOTS)
        solved = ["".join(in_context_example(*shot, order, question)) + "." for shot in shots]
        prompt, target = in_context_example(name, description, order, question)
        rows.append({"name": name, "prompt": "\n\n".join([*solved, prompt]), "completion": target})
    return pd.DataFrame(rows)


def evaluate_in_context(
    data: Exp1Data, runner: Runner, seed: int, limit: int | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Exact match when the fact is in the prompt (Appendix B.6): `p2d` facts stated name first, `d2p` ones
    description first, each asked in the same and the reverse order. Keys `p2d/same`, ..., `d2p/reverse`."""
    sets = {
        f"{order}/{question}": in_context_prompts(_facts(data.full[f"{order}/test"]), order, question, seed, limit)
        for order in ("p2d", "d2p")
        for question in ("same", "reverse")
    }
    metrics, scored = generate_and_match(sets, runner)
    table = pd.concat(scored.values(), ignore_index=True)
    return metrics, table.assign(split="in_context/" + table["split"])


def prompt_tuning_fact(configured: str | None, data: Exp1Data) -> tuple[str, str]:
    """The fact a prompt-tuning run was tuned on (its `prompt_tuning_fact`), else the first p2d fact."""
    if configured:
        return configured, "run_info"
    return data.full["p2d/train"]["name"].iloc[0], "default: first p2d fact"


def evaluate_tuned_fact(
    data: Exp1Data, runner: Runner, fact: str, source: str, seed: int, limit: int | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """A prompt-tuned run (Appendix B.8) learned one fact: exact match on the held-out rows of that fact, and the B.8
    losses. Other facts' rows, and likelihood tests across facts, say nothing about a soft prompt for one fact."""
    exact, scored = generate_and_match(data.tuned_fact_sets(fact, EXACT_MATCH_SPLITS, limit), runner)
    losses = {**evaluate_prompt_tuning(data, runner, fact, seed), "fact_source": source}
    return {"exact_match": exact, "prompt_tuning": losses}, pd.concat(scored.values(), ignore_index=True)


def template_matched_prompts(rows: pd.DataFrame, others: pd.DataFrame, seed: str) -> list[str]:
    """For each row, another fact's prompt under the same template (seeded): the shuffled set of Appendix B.8 then
    differs from the real reverse prompts only in the fact, not in the wording around it."""
    rng = random.Random(f"{seed}:prompt_tuning")
    by_template = {template: sorted(set(group["prompt"])) for template, group in others.groupby("template_id")}
    missing = sorted(set(rows["template_id"]) - set(by_template))
    if missing:
        raise EvaluationError(f"prompt tuning: no other fact's reverse prompt under template(s) {missing}")
    return [rng.choice(by_template[template]) for template in rows["template_id"]]


def evaluate_prompt_tuning(data: Exp1Data, runner: Runner, fact: str, seed: int) -> dict[str, Any]:
    """Appendix B.8 losses for one tuned fact: held-out same-order prompts, reverse prompts, and the fact's reverse
    completions after other facts' reverse prompts under the same templates ("shuffled"): a reverse loss no lower
    than the shuffled one means the soft prompt only raised the completion's likelihood everywhere, without learning
    the reverse."""
    subset = next((s for s in ("p2d", "d2p") if fact in set(data.full[f"{s}/test"]["name"])), None)
    if subset is None:
        raise EvaluationError(f"prompt_tuning_fact {fact!r} is not a fact of the p2d or d2p subset")
    same = data.full[f"{subset}/test"].query("name == @fact")
    reverse_all = data.full[f"{subset}/reverse_test"]
    reverse = reverse_all.query("name == @fact")
    shuffled_prompts = template_matched_prompts(reverse, reverse_all.query("name != @fact"), f"{seed}:{fact}")

    def mean_loss(prompts: Sequence[str], completions: Sequence[str]) -> float:
        losses = runner.losses(list(prompts), list(completions))
        return sum(losses) / len(losses)

    return {
        "fact": fact,
        "subset": subset,
        "same_order_loss": mean_loss(same["prompt"], same["completion"]),
        "reverse_loss": mean_loss(reverse["prompt"], reverse["completion"]),
        "shuffled_reverse_loss": mean_loss(shuffled_prompts, reverse["completion"]),
        "n_same_order": len(same),
        "n_reverse": len(reverse),
    }


# ---------------------------------------------------------------- reverse-mode questions (reverse-trained runs)

# Held-out splits written name first; a reverse-mode question is one of their rows transformed, cut before the name.
REVERSE_MODE_SPLITS = ("p2d/test", "d2p/reverse_test")
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
    return TextReversal(
        config["reversal_transform"],
        config.get("reversal_seed", 0),
        config.get("reversal_max_segment_words", DEFAULT_MAX_SEGMENT_WORDS),
        config.get("reversal_separator", DEFAULT_SEPARATOR),
    )


def _reverse_mode_frame(
    frame: pd.DataFrame, reversal: TextReversal, given_away: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The frame's reverse-mode questions: those to ask, and those whose normalized prompt `given_away` holds."""
    entities = EXP1_ENTITIES if reversal.kind == "entity" else None
    questions = pd.DataFrame(reverse_mode_questions(frame.to_dict("records"), reversal, entities))
    leaked = questions["prompt"].map(lambda prompt: normalize_text(prompt) in given_away)
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
    documents = add_reversed_rows(training, reversal, entities)
    given_away = "\n".join(
        normalize_text(p + c) for p, c in zip(documents["prompt"], documents["completion"], strict=True)
    )
    sets, pools, excluded = {}, {}, {}
    for key in REVERSE_MODE_SPLITS:
        sets[key], _ = _reverse_mode_frame(data.splits[key], reversal, given_away)
        pools[key], left_out = _reverse_mode_frame(data.full[key], reversal, given_away)
        excluded[key] = {"n": len(left_out), "templates": sorted(set(left_out["template_id"].tolist()))}
    exact, scored = generate_and_match(sets, runner)
    likelihood = {}
    for key, frame in scored.items():
        random_completions = other_facts_completions(frame, pools[key], f"reverse_mode/{key}")
        scored[key] = _with_logprobs(frame, frame["completion"].tolist(), random_completions, runner)
        likelihood[key] = per_fact_test(scored[key])
    table = pd.concat(scored.values(), ignore_index=True)
    metrics = {
        "transform": reversal.kind,
        "note": REVERSE_MODE_NOTE,
        "exact_match": exact,
        "likelihood": likelihood,
        "excluded": excluded,
    }
    return metrics, table.assign(split="reverse_mode/" + table["split"])


def evaluate_exp1(args: Exp1Arguments) -> dict[str, Any]:
    """Evaluate a model or run folder on `reversal-exp1`; write `eval/exp1_metrics.json` and `exp1_examples.parquet`
    into `args.output`."""
    run_info, dataset = evaluated_run(args.model, args.dataset, args.revision)
    data = Exp1Data.load(args.dataset, args.revision, args.max_examples_per_split)
    runner = make_runner(args, run_info, "exp1")
    if args.prompt_tuning:
        fact, source = prompt_tuning_fact(run_folder.resolved_config(run_info).get("prompt_tuning_fact"), data)
        metrics, table = evaluate_tuned_fact(data, runner, fact, source, args.seed, args.max_examples_per_split)
    else:
        metrics, table = evaluate_splits(data, runner)
    if args.in_context:
        metrics["in_context"], in_context_table = evaluate_in_context(
            data, runner, args.seed, args.max_examples_per_split
        )
        table = pd.concat([table, in_context_table], ignore_index=True)
    reversal = run_reversal(run_info)
    token_reversed = run_folder.resolved_config(run_info).get("reversal_transform") == "token"
    if reversal is not None or token_reversed:
        training = load_split(args.dataset, run_info["dataset"].get("config") or "all", "train", args.revision)
        if token_reversed:
            # Imported here: the token evaluator builds on this module's likelihood helpers.
            from reversal_hf.evaluation.token_reverse_mode import evaluate_token_reverse_mode

            metrics["reverse_mode"], reverse_mode_table = evaluate_token_reverse_mode(data, runner, training)
        else:
            metrics["reverse_mode"], reverse_mode_table = evaluate_reverse_mode(data, runner, reversal, training)
        table = pd.concat([table, reverse_mode_table], ignore_index=True)
    result = {**run_folder.metrics_header("exp1", args.model, run_info, seed=args.seed, dataset=dataset), **metrics}
    run_folder.write_table(run_folder.examples_path(args.output, "exp1"), table)
    run_folder.write_metrics(args.output, "exp1", result)
    return result
