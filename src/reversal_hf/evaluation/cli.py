"""`reversal-hf eval`: evaluate a training output folder (`run`), or a model on one experiment (`exp1/2/3`).

`eval run <run_dir>` reads the run's `run_info.json` and evaluates it on the experiment and dataset revision it was
trained on, writing `<run_dir>/eval/<experiment>_metrics.json` where the model card picks it up. `eval run
hf://<org>/<name>[@<revision>]` does the same for a run pushed to the Hub, downloaded into `--download_dir` (default
`outputs/hub/<org>/<name>/<revision>/`), its card saying what it was trained on (`hub.fetch_run`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from reversal_hf import hub, run_folder
from reversal_hf.command import run_command
from reversal_hf.configs import OUTPUTS_DIR
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.exp1 import Exp1Arguments, evaluate_exp1
from reversal_hf.evaluation.exp2 import Exp2Arguments, evaluate_exp2
from reversal_hf.evaluation.exp3 import Exp3Arguments, evaluate_exp3
from reversal_hf.evaluation.run import RunArguments, evaluate_run
from reversal_hf.files import FileFormatError
from reversal_hf.models import ModelPrepareError
from reversal_hf.openai_api import OpenAIAPIError

COMMANDS = {
    "run": "evaluate a training output folder as its run_info.json says",
    "exp1": "exact match, likelihood test, in-context and prompt-tuning (Exp. 1)",
    "exp2": "parent/child questions on celebrities (Exp. 2)",
    "exp3": "exact match on held-out questions (Exp. 3)",
}
ARGUMENTS = {"run": RunArguments, "exp1": Exp1Arguments, "exp2": Exp2Arguments, "exp3": Exp3Arguments}
# Bad input, reported as one line: everything else is a bug and keeps its traceback.
INPUT_ERRORS = (EvaluationError, FileFormatError, ModelPrepareError, OpenAIAPIError, hub.HubError)


def exact_match_summary(result: dict[str, Any], written: Path) -> str:
    summary = ", ".join(f"{key} {value['accuracy']:.3f}" for key, value in result["exact_match"].items())
    return f"{result['experiment']} exact match: {summary}\nwrote {written}"


def exp2_summary(metrics: dict[str, Any], output: Path) -> str:
    return (
        f"exp2 {metrics['model']} ({metrics['backend']}, {metrics['n_pairs']} pairs): parent "
        f"{metrics['parent_accuracy']:.3f}, child {metrics['child_accuracy']:.3f} -> {run_folder.eval_dir(output)}"
    )


def build_parser() -> argparse.ArgumentParser:
    """The command list; each command parses its own arguments (`reversal-hf eval <command> --help`)."""
    parser = argparse.ArgumentParser(prog="reversal-hf eval", description=__doc__.splitlines()[0])
    help_ = "; ".join(f"{name}: {text}" for name, text in COMMANDS.items())
    parser.add_argument("command", choices=COMMANDS, help=help_)
    return parser


def command_parser(command: str) -> HfArgumentParser:
    parser = HfArgumentParser(ARGUMENTS[command], prog=f"reversal-hf eval {command}", description=COMMANDS[command])
    if command == "run":
        parser.add_argument("run_dir", help="training output folder (with run_info.json), or hf://<org>/<name>[@<rev>]")
        parser.add_argument("--download_dir", type=Path, help="where an hf:// run is downloaded and scored")
    return parser


def run_folder_of(reference: str, download_dir: Path | None) -> Path:
    """The run folder to evaluate: a local path, or a pushed run (`hf://...`) downloaded and checked."""
    if not reference.startswith(hub.HUB_RUN_SCHEME):
        return Path(reference)
    repo_id, revision = hub.parse_hub_run(reference)
    return hub.fetch_run(repo_id, revision, download_dir or OUTPUTS_DIR / "hub" / repo_id / revision)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in COMMANDS:
        build_parser().parse_args(args[:1])  # usage or help, and exit
    command = args[0]
    parser = command_parser(command)
    try:
        parsed, *rest = parser.parse_args_into_dataclasses(args[1:])
    except ValueError as error:  # a field's own check (EvaluationError), or arguments no field takes
        parser.error(str(error))
    if command == "run":

        def evaluate() -> tuple[dict[str, Any], Path]:
            run_dir = run_folder_of(rest[0].run_dir, rest[0].download_dir)
            return evaluate_run(run_dir, parsed), run_folder.eval_dir(run_dir)

        return run_command(evaluate, INPUT_ERRORS, lambda done: exact_match_summary(*done))
    if command == "exp2":
        return run_command(lambda: evaluate_exp2(parsed), INPUT_ERRORS, lambda r: exp2_summary(r, parsed.output))
    evaluate = evaluate_exp1 if command == "exp1" else evaluate_exp3
    written = run_folder.metrics_path(parsed.output, command)
    return run_command(lambda: evaluate(parsed), INPUT_ERRORS, lambda r: exact_match_summary(r, written))
