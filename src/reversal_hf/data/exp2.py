"""Build `reversal-exp2`: the paper's celebrity child/parent pairs (Experiment 2) and its per-model results.

`--source paper` keeps all 1,513 pairs of `parent_child_pairs.csv` in the paper's order. `--source generate` draws a
seeded random subset of `--num-pairs` pairs (kept in the paper's order), e.g. for a cheaper API evaluation; the pairs
themselves were found with GPT-4 and cannot be regenerated offline. Both validate every input before writing.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from pathlib import Path

import datasets

from reversal_hf.command import run_command
from reversal_hf.data.cli import add_input_output_arguments, parse_configs
from reversal_hf.data.features import value_features
from reversal_hf.data.hub_layout import CardContent, DatasetBuildError, check_output_dir, write_hub_dataset
from reversal_hf.data.prompts import (
    CHAT_FEW_SHOT,
    COMPLETION_PREFIX,
    PARENT_TYPES,
    SYSTEM_PROMPT,
    child_query,
    parent_query,
    prompts_json,
)
from reversal_hf.paths import DATASETS_DIR, PAPER_DATA_DIR

PAPER_EXP2_DIR = PAPER_DATA_DIR / "celebrity_relations"
PAIRS_FILE = "parent_child_pairs.csv"
PAIR_COLUMNS = ("child", "parent", "parent_type", "child_prediction")
PAPER_MODELS = ("gpt-3.5-turbo", "davinci", "llama-7b", "llama-30b", "llama-65b")
# The result files name their score columns by what they hold: chat-model accuracies or base-model log-probs.
SCORE_COLUMNS = {"accuracy": ("_can_find_parent", "_can_find_child"), "logprob": ("_parent_logprob", "_child_logprob")}
CONFIGS = ("pairs", "paper_results")

PAIRS_FEATURES = value_features(
    ("child", "parent", "parent_type", "can_reverse", "child_prediction", "parent_query", "child_query"),
    can_reverse="bool",
)
RESULTS_FEATURES = value_features(
    ("model", "child", "parent", "parent_type", "parent_score", "child_score", "score_kind"),
    parent_score="float64",
    child_score="float64",
)


def read_csv(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header, as strings, checking that the `required` columns are there."""
    if not path.is_file():
        raise DatasetBuildError(f"missing source file {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in required if column not in (reader.fieldnames or [])]
        if missing:
            raise DatasetBuildError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = list(reader)
    if not rows:
        raise DatasetBuildError(f"{path}: no rows")
    return rows


def _parse_bool(value: str, where: str) -> bool:
    if value not in ("True", "False"):
        raise DatasetBuildError(f"{where}: expected True or False, got {value!r}")
    return value == "True"


def _parse_float(value: str, where: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DatasetBuildError(f"{where}: expected a number, got {value!r}") from None


def load_pairs(source_dir: Path) -> list[dict]:
    """The pairs of `parent_child_pairs.csv`, each with its two query texts."""
    path = source_dir / PAIRS_FILE
    pairs = []
    for line, row in enumerate(read_csv(path, (*PAIR_COLUMNS, "can_reverse")), start=2):
        where = f"{path}:{line}"
        if row["parent_type"] not in PARENT_TYPES:
            raise DatasetBuildError(f"{where}: parent_type must be mother or father, got {row['parent_type']!r}")
        if not row["child"] or not row["parent"]:
            raise DatasetBuildError(f"{where}: empty child or parent")
        pairs.append(
            {
                "child": row["child"],
                "parent": row["parent"],
                "parent_type": row["parent_type"],
                "can_reverse": _parse_bool(row["can_reverse"], f"{where} can_reverse"),
                "child_prediction": row["child_prediction"],
                "parent_query": parent_query(row["child"], row["parent_type"]),
                "child_query": child_query(row["parent"]),
            }
        )
    return pairs


def results_file(source_dir: Path, model: str) -> Path:
    """The paper's per-pair results of one of `PAPER_MODELS`."""
    return source_dir / f"{model}_reversal_test_results.csv"


def load_model_results(source_dir: Path, model: str, pairs: list[dict]) -> list[dict]:
    """One model's scores in long format, checking that its rows are the pairs of `parent_child_pairs.csv`."""
    path = results_file(source_dir, model)
    if not path.is_file():
        raise DatasetBuildError(f"missing source file {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    kinds = [kind for kind, (p, c) in SCORE_COLUMNS.items() if f"{model}{p}" in header and f"{model}{c}" in header]
    if not kinds:
        raise DatasetBuildError(f"{path}: no {model}_can_find_parent/child or {model}_parent/child_logprob columns")
    kind = kinds[0]
    parent_column, child_column = (f"{model}{suffix}" for suffix in SCORE_COLUMNS[kind])
    rows = read_csv(path, (*PAIR_COLUMNS, parent_column, child_column))
    if len(rows) != len(pairs):
        raise DatasetBuildError(f"{path}: {len(rows)} rows but {PAIRS_FILE} has {len(pairs)}")
    results = []
    for line, (row, pair) in enumerate(zip(rows, pairs, strict=True), start=2):
        where = f"{path}:{line}"
        if any(row[column] != pair[column] for column in PAIR_COLUMNS):
            raise DatasetBuildError(f"{where}: pair differs from {PAIRS_FILE}")
        results.append(
            {
                "model": model,
                "child": pair["child"],
                "parent": pair["parent"],
                "parent_type": pair["parent_type"],
                "parent_score": _parse_float(row[parent_column], f"{where} {parent_column}"),
                "child_score": _parse_float(row[child_column], f"{where} {child_column}"),
                "score_kind": kind,
            }
        )
    return results


def load_paper_results(source_dir: Path, pairs: list[dict] | None = None) -> dict[str, list[dict]]:
    """The rows of the `paper_results` config for all pairs, per paper model (in `PAPER_MODELS` order).

    Reports read the paper's Experiment 2 numbers from here, so that the paper's files are parsed in one place."""
    pairs = load_pairs(source_dir) if pairs is None else pairs
    return {model: load_model_results(source_dir, model, pairs) for model in PAPER_MODELS}


def select_pairs(num_pairs: int, num_available: int, seed: int) -> list[int]:
    """Indices of a seeded random subset of the pairs, in the paper's order."""
    if num_pairs < 1:
        raise DatasetBuildError("--num-pairs must be at least 1")
    if num_pairs > num_available:
        raise DatasetBuildError(f"too few pairs: --num-pairs {num_pairs} but {PAIRS_FILE} has {num_available}")
    return sorted(random.Random(seed).sample(range(num_available), num_pairs))


def build_configs(
    source_dir: Path, configs: tuple[str, ...], num_pairs: int | None = None, seed: int = 0
) -> dict[str, datasets.DatasetDict]:
    """Read and validate everything, then return the requested configs (all pairs when `num_pairs` is None)."""
    pairs = load_pairs(source_dir)
    keep = list(range(len(pairs))) if num_pairs is None else select_pairs(num_pairs, len(pairs), seed)
    built = {}
    if "pairs" in configs:
        built["pairs"] = datasets.DatasetDict(
            {"test": datasets.Dataset.from_list([pairs[i] for i in keep], features=PAIRS_FEATURES)}
        )
    if "paper_results" in configs:
        rows = [results[i] for results in load_paper_results(source_dir, pairs).values() for i in keep]
        built["paper_results"] = datasets.DatasetDict(
            {"test": datasets.Dataset.from_list(rows, features=RESULTS_FEATURES)}
        )
    return built


def _prompts_section() -> str:
    turns = "\n".join(f"- user: `{q}` → assistant: `{a}`" for q, a in CHAT_FEW_SHOT)
    return f"""The few-shot prompts of the paper's Appendix C.1, also in `prompts.json` (`reversal_hf.data.prompts`
builds them).

**Chat models** (system prompt, three few-shot turns, then the question):

> {SYSTEM_PROMPT}

{turns}

**Base models** (this text, then `Q: <question>` and `A:`; the paper's Llama/davinci child queries lacked the `Q: `):

```
{COMPLETION_PREFIX}
```"""


def make_card(source: str, seed: int | None, num_pairs: int | None) -> CardContent:
    subset = "all pairs" if num_pairs is None else f"a random subset of {num_pairs} pairs drawn with seed {seed}"
    return CardContent(
        pretty_name="Reversal Curse, Experiment 2: celebrity parents",
        summary=(
            "Real-world child/parent pairs (a celebrity and their mother or father) found with GPT-4. GPT-4 names the "
            "parent of a celebrity far more often than the celebrity given the parent (`can_reverse`): the Reversal "
            "Curse in the wild. Config `pairs` holds the questions for both directions; `paper_results` the paper's "
            "scores for gpt-3.5-turbo, davinci and Llama-1 7b/30b/65b, so that new models can sit beside them."
        ),
        how_built=(
            f"From `{PAIRS_FILE}` and the five `<model>_reversal_test_results.csv` files of the paper ({subset}, in "
            'the paper\'s order). `parent_query` is "Who is <child>\'s <mother/father>?", `child_query` "Name a '
            'child of <parent>.". In `paper_results`, `score_kind` is `accuracy` (share of 10 sampled answers that '
            "were correct) for gpt-3.5-turbo and `logprob` (summed log-probability of the answer under the few-shot "
            "completion prompt) for davinci and the Llama models, as the columns of the paper's files say."
        ),
        source=source,
        seed=seed,
        extra_sections={"Prompts": _prompts_section()},
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reversal-exp2", description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("paper", "generate"), default="paper")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset drawn by --source generate")
    parser.add_argument("--num-pairs", type=int, help="pairs kept by --source generate (default: all)")
    return add_input_output_arguments(parser, CONFIGS, PAPER_EXP2_DIR, DATASETS_DIR / "reversal-exp2")


def _build(args: argparse.Namespace) -> Path:
    if args.source == "paper" and args.num_pairs is not None:
        raise DatasetBuildError("--num-pairs needs --source generate")
    check_output_dir(args.output, args.overwrite)
    seed = args.seed if args.source == "generate" else None
    configs = build_configs(args.data_dir, parse_configs(args.configs, CONFIGS), args.num_pairs, args.seed)
    card = make_card(args.source, seed, args.num_pairs)
    extra_files = {"prompts.json": prompts_json()}
    return write_hub_dataset(args.output, configs, card, extra_files=extra_files, overwrite=args.overwrite)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _build(args), (DatasetBuildError, OSError))


if __name__ == "__main__":
    sys.exit(main())
