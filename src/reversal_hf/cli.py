"""`reversal-hf`: one console entry point that dispatches to each concern's own `main(argv)`.

Subcommands are imported lazily so that `reversal-hf --help` and light commands stay fast.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "build-data": ("reversal_hf.data.build", "Build an experiment's dataset: build-data {exp1,exp2,exp3} ..."),
    "push-data": ("reversal_hf.hub", "Push a built dataset folder to the Hub and tag its version."),
    "models": ("reversal_hf.models", "Prepare the local models: models prepare {tiny-exp1,tiny-exp3,smollm2-135m}."),
    "train": ("reversal_hf.launch", "Launch a recipe through accelerate (or print the command with --dry-run)."),
    "sweep": ("reversal_hf.sweep", "Run (or list) every grid point and seed of a sweep recipe."),
    "push-model": ("reversal_hf.model_card", "Push a finished run folder with its model card and eval results."),
    "openai": ("reversal_hf.openai_arm.cli", "Finetune OpenAI models: openai {finetune,sweep} <recipe>."),
    "eval": ("reversal_hf.evaluation", "Evaluate a run folder or model: eval {exp1,exp2,exp3} ..."),
    "report": ("reversal_hf.reporting.report", "Write the Markdown report and figures for run folders."),
    "lm-eval-report": ("reversal_hf.reporting.lm_eval_logs", "Our tables and p-values from lm-eval's sample logs."),
    "reproduce": ("reversal_hf.reproduce", "The main job: build, train, evaluate and report Experiment 1."),
    "readme": ("reversal_hf.reporting.readme", "Write (or --check) the results tables of README.md and docs/*.md."),
    "mitigate": ("reversal_hf.mitigate", "Reverse training against the curse: the tiny-model study and its report."),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "usage: reversal-hf <command> [args]\n\ncommands:\n" + "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help"}:
        print(_usage())
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(f"reversal-hf: unknown command {command!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
