"""`reversal-hf eval`: evaluate a training output folder (`run`), or a model on one experiment (`exp1/2/3`).

`eval run <run_dir>` reads the run's `run_info.json` and evaluates it on the experiment and dataset revision it was
trained on, writing `<run_dir>/eval/<experiment>_metrics.json` where the model card picks it up.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

from reversal_hf.evaluation.common import EvaluationError, read_run_info, resolve_local, run_and_summarize

EXPERIMENTS = {
    "exp1": ("reversal_hf.evaluation.exp1", "exact match, likelihood test, in-context and prompt-tuning (Exp. 1)"),
    "exp2": ("reversal_hf.evaluation.exp2", "parent/child questions on celebrities (Exp. 2)"),
    "exp3": ("reversal_hf.evaluation.exp3", "exact match on held-out questions (Exp. 3)"),
}


def evaluate_run(
    run_dir: str | Path,
    batch_size: int = 32,
    max_examples_per_split: int | None = None,
    seed: int = 0,
    in_context: bool = False,
) -> dict[str, Any]:
    """Evaluate a training output folder with the experiment and dataset revision of its `run_info.json`."""
    info = read_run_info(run_dir)
    if info is None:
        raise EvaluationError(f"{run_dir}: no run_info.json (not a training output folder)")
    dataset = info.get("dataset") or {}
    if not dataset.get("name"):
        raise EvaluationError(f"{Path(run_dir) / 'run_info.json'}: no dataset.name")
    name, revision = resolve_local(dataset["name"]), dataset.get("revision")
    experiment = info.get("experiment")
    if experiment == "exp1":
        from reversal_hf.evaluation.exp1 import evaluate_exp1

        prompt_tuning = info.get("training_mode") == "prompt_tuning"
        return evaluate_exp1(
            run_dir, name, revision, run_dir, seed, batch_size, max_examples_per_split, in_context, prompt_tuning
        )
    if experiment == "exp3":
        from reversal_hf.evaluation.exp3 import evaluate_exp3

        return evaluate_exp3(run_dir, name, revision, run_dir, None, batch_size, max_examples_per_split)
    raise EvaluationError(f"{Path(run_dir) / 'run_info.json'}: experiment {experiment!r} is not exp1 or exp3")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reversal-hf eval", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="{run,exp1,exp2,exp3}")
    run = commands.add_parser("run", help="evaluate a training output folder as its run_info.json says")
    run.add_argument("run_dir", type=Path, help="training output folder (with run_info.json)")
    run.add_argument("--batch-size", type=int, default=32, help="prompts per generation / forward batch")
    run.add_argument("--max-examples-per-split", type=int, default=None, help="evenly spaced rows (quick runs)")
    run.add_argument("--seed", type=int, default=0, help="seed of the random wrong completions and of the shots")
    run.add_argument("--in-context", action="store_true", help="exp1: also the in-context evaluation (B.6)")
    for name, (_, help_) in EXPERIMENTS.items():
        commands.add_parser(name, help=f"{help_}; see `reversal-hf eval {name} --help`", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in EXPERIMENTS:
        return int(importlib.import_module(EXPERIMENTS[args[0]][0]).main(args[1:]) or 0)
    parsed = build_parser().parse_args(args)
    return run_and_summarize(
        lambda: evaluate_run(
            parsed.run_dir, parsed.batch_size, parsed.max_examples_per_split, parsed.seed, parsed.in_context
        ),
        parsed.run_dir / "eval",
    )
