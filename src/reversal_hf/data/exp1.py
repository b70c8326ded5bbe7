"""`reversal-exp1`: the Experiment 1 dataset (fictitious celebrities, "<name> is <description>") in Hub layout.

Two sources. `--source paper` re-shapes the paper's `june_version_7921032488` files row for row and annotates each
row (fact, template, direction) so that evaluators never re-parse strings (`exp1_paper`). `--source generate --seed N`
builds a fresh dataset the way the paper did (`exp1_generate`). Either way the build fails if a held-out prompt, or a
fact stated in the reverse order, reaches a training split; `leak_check` runs the same check on a built folder.
Columns, configs and the template split rule are in `exp1_schema`, the card text in `exp1_card`.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import datasets

from reversal_hf.command import run_command
from reversal_hf.data.cli import add_output_arguments, check_configs
from reversal_hf.data.exp1_card import make_card
from reversal_hf.data.exp1_generate import build_generated, read_generation_templates, sample_facts
from reversal_hf.data.exp1_paper import PAPER_EXP1_DIR, TEMPLATES_DIR, build_from_paper
from reversal_hf.data.exp1_schema import (
    CONFIGS,
    FACTS_PER_SUBSET,
    FEATURES,
    SPLITS,
    TRAIN_SPLIT,
    Splits,
    read_unique,
)
from reversal_hf.data.hub_layout import DatasetBuildError, check_output_dir, write_hub_dataset
from reversal_hf.data.leak_check import held_out_prompt_leaks, raise_on_leaks, read_splits
from reversal_hf.data.paraphrase import DIRECTIONS, OfflineParaphraser, OpenAIParaphraser, Paraphraser
from reversal_hf.data.reversal_transforms import (
    DEFAULT_MAX_SEGMENT_WORDS,
    DEFAULT_SEPARATOR,
    EXP1_ENTITIES,
    TEXT_TRANSFORMS,
    TRANSFORMS,
    ReversalError,
    TextReversal,
    add_other_order_rows,
    leak_check_rows,
)
from reversal_hf.files import FileFormatError
from reversal_hf.openai_api import OpenAIAPIError
from reversal_hf.paths import BUILD_DIR, DATASETS_DIR

DEFAULT_CACHE = BUILD_DIR / "cache" / "exp1_paraphrases.jsonl"


def find_leaks(splits: Splits) -> list[str]:
    """Held-out prompts found inside a training document, and training documents that state a fact reversed."""
    return held_out_prompt_leaks(splits, TRAIN_SPLIT) + [
        f"{config}/train states the {row['subset']} fact of {row['name']!r} in {row['direction']} order"
        for (config, split), rows in splits.items()
        if split == TRAIN_SPLIT
        for row in rows
        if row["subset"] in DIRECTIONS and row["direction"] != row["subset"]
    ]


def reverse_training_leaks(
    splits: Splits,
    transform: str,
    *,
    seed: int = 0,
    max_segment_words: int = DEFAULT_MAX_SEGMENT_WORDS,
    separator: str = DEFAULT_SEPARATOR,
) -> list[str]:
    """`find_leaks` on the splits as a reverse-trained run sees them: the training splits with the rows `transform`
    adds, and each held-out prompt also checked transformed ("no held-out prompt, in either order").

    `both_orders` states facts in the other order on purpose, so only its held-out prompt leaks count; `token` leaves
    the text as it is (its reversed rows are token ids), so its splits are checked as written.
    """
    if transform in TEXT_TRANSFORMS:
        reversal = TextReversal(transform, seed, max_segment_words, separator)
        return find_leaks(leak_check_rows(splits, reversal, EXP1_ENTITIES if transform == "entity" else None))
    if transform == "both_orders":
        viewed = {
            (config, split): add_other_order_rows(datasets.Dataset.from_list(list(rows))).to_list()
            if split == TRAIN_SPLIT
            else rows
            for (config, split), rows in splits.items()
        }
        return held_out_prompt_leaks(viewed, TRAIN_SPLIT)
    if transform == "token":
        return find_leaks(splits)
    raise ReversalError(f"reversal_transform: unknown transform {transform!r}; choose from {', '.join(TRANSFORMS)}")


def leak_check(dataset_dir: str | Path, reversal_transform: str | None = None, **reversal_settings: Any) -> None:
    """Raise `LeakError` when a built dataset folder leaks held-out prompts or reversed facts into training; with a
    `reversal_transform` (and its settings), as reverse training would transform it (`reverse_training_leaks`)."""
    folder = Path(dataset_dir)
    splits = read_splits(folder, SPLITS)
    if not splits:
        raise DatasetBuildError(f"no Experiment 1 splits under {folder}/data")
    if reversal_transform is None:
        raise_on_leaks(find_leaks(splits))
    else:
        raise_on_leaks(reverse_training_leaks(splits, reversal_transform, **reversal_settings))


def _to_configs(splits: Splits, configs: list[str]) -> dict[str, datasets.DatasetDict]:
    return {
        config: datasets.DatasetDict(
            {split: datasets.Dataset.from_list(splits[(config, split)], features=FEATURES) for split in SPLITS[config]}
        )
        for config in configs
    }


def _build(args: argparse.Namespace) -> Path:
    check_configs(args.configs, CONFIGS)
    check_output_dir(args.output, args.overwrite)  # before any paraphrasing is paid for
    if args.source == "paper":
        splits = build_from_paper(args.paper_dir)
    else:
        rng = random.Random(args.seed)
        templates = {
            "p2d": read_generation_templates(args.p2d_templates, "p2d"),
            "d2p": read_generation_templates(args.d2p_templates, "d2p"),
        }
        names = read_unique(args.names, "name")
        facts = sample_facts(names, read_unique(args.descriptions, "description"), args.facts_per_subset, rng)
        splits = build_generated(facts, templates, _paraphraser(args), rng)
    raise_on_leaks(find_leaks(splits))
    configs = _to_configs(splits, args.configs)
    return write_hub_dataset(args.output, configs, make_card(splits, args), overwrite=args.overwrite)


def _paraphraser(args: argparse.Namespace) -> Paraphraser:
    if args.paraphraser == "offline":
        return OfflineParaphraser()
    if not args.model:
        raise DatasetBuildError("--model is required with --paraphraser openai")
    return OpenAIParaphraser(
        args.model, args.cache, base_url=args.base_url, concurrency=args.concurrency, max_retries=args.max_retries
    )


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="build_exp1", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("paper", "generate"), required=True)
    add_output_arguments(parser, DATASETS_DIR / "reversal-exp1")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), help="configs to write (default: all)")
    parser.add_argument("--paper-dir", type=Path, default=PAPER_EXP1_DIR, help="the paper's reverse_experiments/")
    generate = parser.add_argument_group("--source generate")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--names", type=Path, default=TEMPLATES_DIR / "names.txt", help="one name a line")
    generate.add_argument("--descriptions", type=Path, default=TEMPLATES_DIR / "descriptions.txt")
    generate.add_argument("--p2d-templates", type=Path, default=TEMPLATES_DIR / "p2d_templates.txt")
    generate.add_argument("--d2p-templates", type=Path, default=TEMPLATES_DIR / "d2p_templates.txt")
    generate.add_argument("--facts-per-subset", type=int, default=FACTS_PER_SUBSET)
    generate.add_argument("--paraphraser", choices=("offline", "openai"), default="offline")
    generate.add_argument("--base-url", help="OpenAI-compatible endpoint (key from OPENAI_API_KEY, if any)")
    generate.add_argument("--model", help="model name for --paraphraser openai")
    generate.add_argument("--concurrency", type=_positive_int, default=8, help="parallel requests")
    generate.add_argument("--max-retries", type=int, default=5, help="per request, on 429/5xx/timeouts")
    generate.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="JSON-lines cache of model replies")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(lambda: _build(args), (DatasetBuildError, OpenAIAPIError, FileFormatError))
