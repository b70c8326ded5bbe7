"""Experiment 1 evaluation: exact match on every split the paper reports, and the "increased likelihood" test.

Optionally the in-context version of Appendix B.6 (the fact in the prompt, 3-shot: models reverse in context) and the
prompt-tuning losses of Appendix B.8. Writes `eval/exp1_metrics.json` (docs/ARCHITECTURE.md "Metrics JSON") and a
per-example table `eval/exp1_examples.parquet`; the metrics file is written last, so its presence means done.

The random wrong completion of the likelihood test is drawn here (seeded, from another fact of the same split, never
the correct one): in the paper's `p2d_reverse_prompts_test_randomized`, 13 of the 300 "random" names are the correct
one. The paper-file variant is reported beside ours, for fidelity only.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from reversal_hf.evaluation.common import (
    EVAL_DIRNAME,
    BatchedRunner,
    EvaluationError,
    Runner,
    dataset_info,
    evaluator_parser,
    generate_and_match,
    likelihood_test,
    limited_indices,
    load_model_and_tokenizer,
    load_split,
    read_run_info,
    run_and_summarize,
    write_examples,
    write_json,
)

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


@dataclass(frozen=True)
class Exp1Data:
    """The splits an evaluation reads, as DataFrames keyed `config/split`: `splits` are the evaluated rows (limited
    for quick runs), `full` every row (the pools random completions, shots and prompt-tuning rows come from)."""

    splits: dict[str, pd.DataFrame]
    full: dict[str, pd.DataFrame]

    @classmethod
    def load(cls, dataset: str, revision: str | None, max_examples_per_split: int | None = None) -> Exp1Data:
        full = {}
        for key in dict.fromkeys((*EXACT_MATCH_SPLITS, "p2d/train")):
            config, split = key.split("/")
            full[key] = load_split(dataset, config, split, revision).to_pandas()
        splits = {
            key: full[key].iloc[limited_indices(len(full[key]), max_examples_per_split)].reset_index(drop=True)
            for key in EXACT_MATCH_SPLITS
        }
        return cls(splits, full)


def _normalized(text: str) -> str:
    return text.strip().casefold()


def draw_random_completions(frame: pd.DataFrame, pool: pd.DataFrame, seed: int, key: str) -> list[str]:
    """For each row, the completion another fact of `pool` has under the same template, seeded; never the row's own.

    The paper's descriptions were bent by an LLM to fit each template, so another template's completion would be less
    likely for its grammar alone; drawing within the template leaves the fact as the only difference.
    """
    rng = random.Random(f"{seed}:{key}")
    by_template: dict[int, set[tuple[str, str]]] = defaultdict(set)
    for name, completion, template in zip(pool["name"], pool["completion"], pool["template_id"], strict=True):
        by_template[template].add((name, completion))
    drawn = []
    for name, completion, template in zip(frame["name"], frame["completion"], frame["template_id"], strict=True):
        candidates = sorted(by_template[template])
        others = [c for n, c in candidates if n != name and _normalized(c) != _normalized(completion)]
        if not others:
            raise EvaluationError(f"{key}: no other fact under template {template} to draw a random completion from")
        drawn.append(rng.choice(others))
    return drawn


def _per_fact_test(frame: pd.DataFrame) -> dict[str, Any]:
    """Average each fact's held-out prompts first (Appendix B.5), then compare correct against random."""
    per_fact = frame.groupby("name", sort=True)[["correct_logprob", "random_logprob"]].mean()
    return likelihood_test(per_fact["correct_logprob"].tolist(), per_fact["random_logprob"].tolist())


def _likelihood_columns(key: str, frame: pd.DataFrame, data: Exp1Data, runner: Runner, seed: int) -> pd.DataFrame:
    """Log-probs of the correct and a random completion: ours on reverse tests, the paper's on its randomized file."""
    if key == PAPER_RANDOM_SPLIT:
        reverse = data.full["p2d/reverse_test"]
        correct_by_prompt = dict(zip(reverse["prompt"], reverse["completion"], strict=True))
        missing = [prompt for prompt in frame["prompt"] if prompt not in correct_by_prompt]
        if missing:
            raise EvaluationError(f"{key}: prompt {missing[0]!r} is not in p2d/reverse_test")
        correct = [correct_by_prompt[prompt] for prompt in frame["prompt"]]
        random_completions = frame["completion"].tolist()
    else:
        correct = frame["completion"].tolist()
        random_completions = draw_random_completions(frame, data.full[key], seed, key)
    prompts = frame["prompt"].tolist()
    logprobs = runner.logprobs(prompts + prompts, correct + random_completions)
    return frame.assign(
        correct_completion=correct,
        random_completion=random_completions,
        random_is_correct=[_normalized(r) == _normalized(c) for r, c in zip(random_completions, correct, strict=True)],
        correct_logprob=logprobs[: len(prompts)],
        random_logprob=logprobs[len(prompts) :],
    )


def evaluate_splits(data: Exp1Data, runner: Runner, seed: int = 0) -> tuple[dict[str, Any], pd.DataFrame]:
    """Exact match on every split, the likelihood tests, and the per-example table."""
    exact, scored = generate_and_match({key: data.splits[key] for key in EXACT_MATCH_SPLITS}, runner)
    likelihood = {}
    for key in (*LIKELIHOOD_SPLITS, PAPER_RANDOM_SPLIT):
        frame = scored[key] = _likelihood_columns(key, scored[key], data, runner, seed)
        result = _per_fact_test(frame)
        if key == PAPER_RANDOM_SPLIT:
            result["n_random_is_correct"] = int(frame["random_is_correct"].sum())
        likelihood[PAPER_RANDOM_KEY if key == PAPER_RANDOM_SPLIT else key] = result
    return {"exact_match": exact, "likelihood": likelihood}, pd.concat(scored.values(), ignore_index=True)


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


def prompt_tuning_fact(run_info: dict[str, Any] | None, data: Exp1Data) -> tuple[str, str]:
    """The fact a prompt-tuning run was tuned on (`resolved_config.prompt_tuning_fact`), else the first p2d fact."""
    configured = ((run_info or {}).get("resolved_config") or {}).get("prompt_tuning_fact")
    if configured:
        return configured, "run_info"
    return data.full["p2d/train"]["name"].iloc[0], "default: first p2d fact"


def evaluate_prompt_tuning(data: Exp1Data, runner: Runner, fact: str, seed: int) -> dict[str, Any]:
    """Appendix B.8 losses for one tuned fact: held-out same-order prompts, reverse prompts, and the fact's reverse
    completions after other facts' reverse prompts ("shuffled"): a reverse loss no lower than the shuffled one means
    the soft prompt only raised the completion's likelihood everywhere, without learning the reverse."""
    subset = next((s for s in ("p2d", "d2p") if fact in set(data.full[f"{s}/test"]["name"])), None)
    if subset is None:
        raise EvaluationError(f"prompt_tuning_fact {fact!r} is not a fact of the p2d or d2p subset")
    same = data.full[f"{subset}/test"].query("name == @fact")
    reverse_all = data.full[f"{subset}/reverse_test"]
    reverse = reverse_all.query("name == @fact")
    other_prompts = sorted(set(reverse_all.query("name != @fact")["prompt"]))
    shuffled_prompts = random.Random(f"{seed}:prompt_tuning:{fact}").sample(other_prompts, len(reverse))

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


def evaluate_exp1(
    model_or_run_dir: str | Path,
    dataset_name_or_path: str,
    revision: str | None = None,
    output_dir: str | Path | None = None,
    seed: int = 0,
    batch_size: int = 32,
    max_examples_per_split: int | None = None,
    in_context: bool = False,
    prompt_tuning: bool = False,
) -> dict[str, Any]:
    """Evaluate a model or run folder on `reversal-exp1`; write `eval/exp1_metrics.json` and `exp1_examples.parquet`.

    `output_dir` defaults to the model folder (a run folder keeps its results beside its model card).
    """
    output = Path(output_dir if output_dir is not None else model_or_run_dir)
    run_info = read_run_info(model_or_run_dir) if Path(model_or_run_dir).is_dir() else None
    dataset = dataset_info(dataset_name_or_path, revision, run_info)
    data = Exp1Data.load(dataset_name_or_path, revision, max_examples_per_split)
    model, tokenizer = load_model_and_tokenizer(model_or_run_dir)
    runner = BatchedRunner(model, tokenizer, batch_size)
    metrics, table = evaluate_splits(data, runner, seed)
    if in_context:
        metrics["in_context"], in_context_table = evaluate_in_context(data, runner, seed, max_examples_per_split)
        table = pd.concat([table, in_context_table], ignore_index=True)
    if prompt_tuning:
        fact, source = prompt_tuning_fact(run_info, data)
        metrics["prompt_tuning"] = {**evaluate_prompt_tuning(data, runner, fact, seed), "fact_source": source}
    result = {
        "experiment": "exp1",
        "run_dir": str(model_or_run_dir) if run_info is not None else None,
        "model": (run_info or {}).get("model_name_or_path") or str(model_or_run_dir),
        "seed": seed,
        "dataset": dataset,
        **metrics,
    }
    write_examples(output / EVAL_DIRNAME / "exp1_examples.parquet", table)
    write_json(output / EVAL_DIRNAME / "exp1_metrics.json", result)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = evaluator_parser("exp1", __doc__.splitlines()[0])
    parser.add_argument("--in-context", action="store_true", help="also the in-context evaluation (Appendix B.6)")
    parser.add_argument("--prompt-tuning", action="store_true", help="also the prompt-tuning losses (Appendix B.8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random wrong completions and of the shots")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_and_summarize(
        lambda: evaluate_exp1(
            args.model,
            args.dataset,
            args.revision,
            args.output,
            seed=args.seed,
            batch_size=args.batch_size,
            max_examples_per_split=args.max_examples_per_split,
            in_context=args.in_context,
            prompt_tuning=args.prompt_tuning,
        ),
        args.output / EVAL_DIRNAME / "exp1_metrics.json",
    )
