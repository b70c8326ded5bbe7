"""Evaluating a training output folder the way its `run_info.json` says: its experiment, on the dataset revision it
was trained on, with the results written into the folder (where the model card picks them up)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reversal_hf import run_folder
from reversal_hf.evaluation.arguments import BatchingArguments, EndpointArguments
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.exp1 import Exp1Arguments, Exp1Options, evaluate_exp1
from reversal_hf.evaluation.exp3 import Exp3Arguments, evaluate_exp3

# The runner a run's `training_mode` is evaluated with (every other mode: a local causal model, `hf`).
BACKENDS = {run_folder.OPENAI_TRAINING_MODE: "openai", "mlm_u": "mlm_u"}


@dataclass(kw_only=True)
class RunArguments(BatchingArguments, Exp1Options, EndpointArguments):
    """`reversal-hf eval run <run_dir>`: the experiment, model and dataset come from the run folder (an OpenAI run's
    model is its `fine_tuned_model`, at the endpoint)."""


def evaluate_run(run_dir: str | Path, args: RunArguments | None = None) -> dict[str, Any]:
    """Evaluate a training output folder with the experiment and dataset revision of its `run_info.json`."""
    args = args or RunArguments()
    info = run_folder.read_run_info(run_dir)
    if info is None:
        raise EvaluationError(f"{run_dir}: no {run_folder.RUN_INFO} (not a training output folder)")
    dataset = info.get("dataset") or {}
    if not dataset.get("name"):
        raise EvaluationError(f"{run_folder.run_info_path(run_dir)}: no dataset.name")
    try:  # before the evaluation, not after it
        run_folder.check_output_dir(run_folder.eval_dir(run_dir))
    except run_folder.OutputDirError as error:
        raise EvaluationError(str(error)) from error
    target = {
        "model": str(run_dir),
        "dataset": run_folder.resolve_local(dataset["name"]),
        "revision": dataset.get("revision"),
        "output": Path(run_dir),
        "batch_size": args.batch_size,
        "max_examples_per_split": args.max_examples_per_split,
        "backend": BACKENDS.get(info.get("training_mode"), "hf"),
        **{item.name: getattr(args, item.name) for item in dataclasses.fields(EndpointArguments)},
    }
    experiment = info.get("experiment")
    if experiment == "exp1":
        prompt_tuning = info.get("training_mode") == "prompt_tuning"
        return evaluate_exp1(
            Exp1Arguments(**target, seed=args.seed, in_context=args.in_context, prompt_tuning=prompt_tuning)
        )
    if experiment == "exp3":
        return evaluate_exp3(Exp3Arguments(**target))
    raise EvaluationError(f"{run_folder.run_info_path(run_dir)}: experiment {experiment!r} is not exp1 or exp3")
