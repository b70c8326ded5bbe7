"""`reversal-exp1`: the Experiment 1 dataset (fictitious celebrities, "<name> is <description>") in Hub layout.

Two sources. `--source paper` re-shapes the paper's `june_version_7921032488` files row for row and annotates each
row (fact, template, direction) so that evaluators never re-parse strings (`exp1_paper`). `--source generate --seed N`
builds a fresh dataset the way the paper did (`exp1_generate`). Either way the build fails if a held-out prompt, or a
fact stated in the reverse order, reaches a training split (`leak_check`).
Columns, configs and the template split rule are in `exp1_schema`, the card text in `exp1_card`.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

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
    Splits,
    read_unique,
)
from reversal_hf.data.hub_layout import DatasetBuildError, check_output_dir, write_hub_dataset
from reversal_hf.data.leak_check import find_leaks, raise_on_leaks
from reversal_hf.data.paraphrase import OfflineParaphraser, OpenAIParaphraser, Paraphraser
from reversal_hf.files import FileFormatError
from reversal_hf.openai_api import OpenAIAPIError
from reversal_hf.paths import BUILD_DIR, DATASETS_DIR

DEFAULT_CACHE = BUILD_DIR / "cache" / "exp1_paraphrases.jsonl"


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
    raise_on_leaks(find_leaks("exp1", splits))
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
