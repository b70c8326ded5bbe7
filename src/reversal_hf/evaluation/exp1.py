"""Experiment 1 evaluation: exact match on every split the paper reports, and the "increased likelihood" test.

Optionally the in-context version of Appendix B.6 (the fact in the prompt, 3-shot: models reverse in context) and the
prompt-tuning losses of Appendix B.8. Writes `eval/exp1_metrics.json` (docs/ARCHITECTURE.md "Metrics JSON") and a
per-example table `eval/exp1_examples.parquet`; the metrics file is written last, so its presence means done.

The likelihood test (`likelihood`) scores each held-out prompt's correct completion against every other fact's
completion under the same template; the paper-file variant (its one random completion per prompt) is reported beside
ours, for fidelity only. A reverse-trained run adds its reverse-mode questions (`reverse_mode`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from reversal_hf import run_folder
from reversal_hf.evaluation.arguments import EvaluatorArguments
from reversal_hf.evaluation.backends import Runner, generate_and_match, make_runner
from reversal_hf.evaluation.data import EXACT_MATCH_SPLITS, Exp1Data, evaluated_run, limited_indices, load_split
from reversal_hf.evaluation.errors import EvaluationError, LogprobsUnavailableError
from reversal_hf.evaluation.likelihood import other_facts_completions, per_fact_test, with_logprobs
from reversal_hf.evaluation.reverse_mode import evaluate_reverse_mode, evaluate_token_reverse_mode, run_reversal

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
    return with_logprobs(frame, correct, random_completions, runner)


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
        "shuffled_reverse_prompts": run_folder.SHUFFLED_SAME_TEMPLATE,
        "n_same_order": len(same),
        "n_reverse": len(reverse),
    }


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
            metrics["reverse_mode"], reverse_mode_table = evaluate_token_reverse_mode(data, runner, training)
        else:
            metrics["reverse_mode"], reverse_mode_table = evaluate_reverse_mode(data, runner, reversal, training)
        table = pd.concat([table, reverse_mode_table], ignore_index=True)
    result = {**run_folder.metrics_header("exp1", args.model, run_info, seed=args.seed, dataset=dataset), **metrics}
    run_folder.write_table(run_folder.examples_path(args.output, "exp1"), table)
    run_folder.write_metrics(args.output, "exp1", result)
    return result
