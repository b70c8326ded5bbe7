"""`reversal-hf reproduce`: the main job, the Reversal Curse end to end.

Builds (or checks) the paper-reference dataset and its leak check, prepares the model, trains the Experiment 1 recipe
once per seed through the real launcher, evaluates every run on the dataset revision it was trained on, and writes
`report.md`, the figures, `metrics.json` and a table for the terminal. Finished steps are kept, so a rerun resumes,
and the report is rewritten after every step (`metrics.json` lists what is `pending`); `--report-only` writes it for a
study stopped part way, without running anything.
With `--full` it runs the experiments as the paper did: Experiment 1 also evaluated in context (Appendix B.6: the
base model, as the paper scored it, and each finetuned seed as a labelled extra), Experiment 3 on both datasets for a
fixed 20 epochs with learning curves and the paper's 5 seeds (Sec. 4, App. D.1), prompt tuning (Appendix B.8) with the
paper's 10 seeds where the model has such a recipe, each beside a control whose soft prompt starts random rather than
from the fact's text, and Experiment 2 (likelihood of parent vs child). `--dry-run` prints that plan without running
it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from reversal_hf import files, launch, run_folder
from reversal_hf.command import run_command
from reversal_hf.configs import RECIPES_DIR, RecipeError
from reversal_hf.data import exp1 as exp1_data
from reversal_hf.data import exp2 as exp2_data
from reversal_hf.data import exp3 as exp3_data
from reversal_hf.data import leak_check
from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.exp1 import Exp1Arguments, evaluate_exp1
from reversal_hf.evaluation.exp2 import Exp2Arguments, evaluate_exp2
from reversal_hf.evaluation.run import RunArguments, evaluate_run
from reversal_hf.models import ModelPrepareError, prepare_model
from reversal_hf.paths import DATASETS_DIR
from reversal_hf.precision import cpu_capability, machine_info
from reversal_hf.reporting.report import summary_table, write_report
from reversal_hf.reporting.runs import ReportInputError

# A shortened run for CI: a few optimizer steps, a few examples per split; it checks the plumbing, not the result.
QUICK_TRAIN_OVERRIDES = ["--max_steps", "8"]
QUICK_EXAMPLES_PER_SPLIT = 16
# Appendix B.6 scores the model that was not finetuned: its Exp 1 evaluation (in context too) has its own folder.
BASE_MODEL_EXP1 = "exp1-base-model"
# B.8's control: a soft prompt of the same length initialised at random, not from the fact's text.
RANDOM_INIT_OVERRIDES = ("--prompt_tuning_init", "random")
# The evaluation options `--dry-run` shows (the others are the OpenAI endpoint's, unused by local models).
EVALUATION_OPTIONS = ("in_context", "max_examples_per_split", "batch_size", "seed")


class ReproduceError(RuntimeError):
    """A step of the main job failed; the message says which and why."""


# What a step of a train-evaluate-report job raises for bad input or a failed step: one line, exit status 1.
JOB_ERRORS = (
    ReproduceError,
    RecipeError,
    DatasetBuildError,
    EvaluationError,
    files.FileFormatError,
    ModelPrepareError,
    ReportInputError,
)


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the job: a recipe at a seed into a folder, with its command-line overrides, and how it is
    evaluated."""

    recipe: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...] = ()
    evaluation: RunArguments = field(default_factory=RunArguments)


@dataclass(frozen=True)
class Plan:
    """What one invocation trains: the model, the recipes and how many seeds."""

    model: str
    exp1_recipe: str
    exp3_recipe: str | None
    seeds: int
    quick: bool
    output: Path
    prompt_tuning_recipe: str | None = None
    exp3_seeds: int = 5  # the paper's (Sec. 4, App. D.1)
    prompt_tuning_seeds: int = 10  # the paper's (App. B.8)

    @property
    def full(self) -> bool:
        return self.exp3_recipe is not None

    def training_runs(self) -> list[PlannedRun]:
        """Every run, in training order, shortest first: Exp 1 per seed, prompt tuning per seed (text-initialised, then
        the random-initialised control), Exp 3 per seed and order."""
        runs_dir = self.output / "runs"
        limit = QUICK_EXAMPLES_PER_SPLIT if self.quick else None
        exp1_evaluation = RunArguments(max_examples_per_split=limit, in_context=self.full)
        runs = [
            PlannedRun(self.exp1_recipe, seed, runs_dir / f"exp1-seed{seed}", evaluation=exp1_evaluation)
            for seed in range(self.seeds)
        ]
        evaluation = RunArguments(max_examples_per_split=limit)
        if self.prompt_tuning_recipe:
            for name, overrides in (("prompt-tuning", ()), ("prompt-tuning-random-init", RANDOM_INIT_OVERRIDES)):
                runs += [
                    PlannedRun(
                        self.prompt_tuning_recipe, seed, runs_dir / f"exp1-{name}-seed{seed}", overrides, evaluation
                    )
                    for seed in range(self.prompt_tuning_seeds)
                ]
        if self.exp3_recipe:  # both instruction orders, reported side by side; the longest runs, so last
            runs += [
                PlannedRun(
                    self.exp3_recipe,
                    seed,
                    runs_dir / f"exp3-{config}-seed{seed}",
                    ("--dataset_config", config),
                    evaluation,
                )
                for seed in range(self.exp3_seeds)
                for config in exp3_data.CONFIGS
            ]
        return runs

    @property
    def base_model_dirs(self) -> list[Path]:
        """`--full`: the evaluations of the model that was not finetuned, Exp 2 and Exp 1 in context (App. B.6)."""
        return [self.output / "exp2", self.output / BASE_MODEL_EXP1] if self.full else []

    def step_dirs(self) -> list[Path]:
        """Every folder the job fills, in order: the base model's evaluations (`--full`), then each training run."""
        return self.base_model_dirs + [run.run_dir for run in self.training_runs()]

    def describe(self) -> str:
        """The plan as `--dry-run` prints it: Exp 2, then every run with its overrides and evaluation options."""
        quick = list(QUICK_TRAIN_OVERRIDES) if self.quick else []
        lines = [
            f"[reproduce] plan for {self.model} -> {self.output} ({'quick' if self.quick else 'as the recipes say'})"
        ]
        if self.full:
            limit = f", {QUICK_EXAMPLES_PER_SPLIT} pairs" if self.quick else ""
            lines.append(f"evaluate exp2 on {self.model} -> {self.output / 'exp2'} (hf backend{limit})")
            lines.append(f"evaluate exp1 in context on {self.model} -> {self.output / BASE_MODEL_EXP1}{limit}")
        for run in self.training_runs():
            overrides = ["--seed", str(run.seed), "--output_dir", str(run.run_dir), *run.overrides, *quick]
            options = {key: getattr(run.evaluation, key) for key in EVALUATION_OPTIONS}
            lines.append(f"train {run.recipe} seed {run.seed} -> {run.run_dir}")
            lines.append(f"    overrides: {' '.join(overrides)}")
            lines.append(f"    evaluate: {options}")
        lines.append(f"report -> {self.output / 'report.md'}, {self.output / 'metrics.json'}")
        return "\n".join(lines)


def ensure_dataset(name: str, builder: Any) -> Path:
    """The paper-reference build of a dataset, built once into build/datasets/."""
    folder = DATASETS_DIR / name
    if not (folder / run_folder.BUILD_INFO).exists() and builder.main(["--source", "paper", "--output", str(folder)]):
        raise ReproduceError(f"building {folder} failed (see the error above)")
    return folder


def train_once(recipe: str, run_dir: Path, seed: int, quick: bool, extra: list[str]) -> Path:
    """Train one seed through `reversal-hf train`, unless a finished run is already there: with its weights, or
    evaluated (a committed run folder holds no weights, so a study split across machines resumes from its results)."""
    info = run_folder.read_run_info(run_dir)
    evaluated = info is not None and run_folder.read_metrics(run_dir, info.get("experiment")) is not None
    if info is not None and (evaluated or any(run_dir.glob("*.safetensors"))):
        print(f"[reproduce] {run_dir} already trained: kept")
        return run_dir
    overrides = ["--seed", str(seed), "--output_dir", str(run_dir), *extra, *(QUICK_TRAIN_OVERRIDES if quick else [])]
    # Results of any earlier model in this folder are stale.
    shutil.rmtree(run_folder.eval_dir(run_dir), ignore_errors=True)
    print(f"[reproduce] training {recipe} seed {seed} -> {run_dir}", flush=True)
    if launch.main([recipe, "--", *overrides]) != 0 or not run_folder.is_finished(run_dir):
        raise ReproduceError(f"training {recipe} (seed {seed}) failed; its output is in {run_dir}")
    return run_dir


def evaluate_once(run_dir: Path, evaluation: RunArguments) -> dict[str, Any]:
    """Evaluate a run (once) and check that evaluation used the very data the run was trained on."""
    info = run_folder.read_run_info(run_dir) or {}
    experiment = info.get("experiment")
    metrics = run_folder.read_metrics(run_dir, experiment)
    if metrics is not None:
        print(f"[reproduce] {run_folder.metrics_path(run_dir, experiment)} already written: kept")
    else:
        print(f"[reproduce] evaluating {run_dir}", flush=True)
        metrics = evaluate_run(run_dir, evaluation)
    trained = info.get("dataset", {})
    evaluated = metrics.get("dataset", {})
    for key in ("revision", "content_hash"):
        if trained.get(key) != evaluated.get(key):
            raise ReproduceError(
                f"{run_dir}: evaluated on dataset {key} {evaluated.get(key)!r}, trained on {trained.get(key)!r}"
            )
    return metrics


TIMELINE = "timeline.jsonl"


def timed(output: Path, step: str, action: Callable[[], Any]) -> Any:
    """Run one step of the job and append how long it took to `timeline.jsonl`, so the time a study took adds up
    across the sessions (and machines) that ran its parts; a step that found its results kept takes ~0 s."""
    started = time.perf_counter()
    result = action()
    record = {
        "step": step,
        "seconds": round(time.perf_counter() - started, 1),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": run_folder.git_commit(),
        "cpu_capability": cpu_capability(),  # refined: bf16 instructions decide the speed
    }
    output.mkdir(parents=True, exist_ok=True)
    with (output / TIMELINE).open("a", encoding="utf-8") as timeline:
        timeline.write(json.dumps(record) + "\n")
    return result


def timeline_summary(output: Path) -> dict[str, Any]:
    """The job's total time over every invocation that worked on it, and the dates it ran on."""
    path = output / TIMELINE
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return {
        "seconds": round(sum(record["seconds"] for record in records), 1),
        "steps": len({record["step"] for record in records}),  # distinct: a resumed step is timed again at ~0 s
        "dates": sorted({record["finished"][:10] for record in records}),
    }


def train_and_evaluate(run: PlannedRun, quick: bool) -> dict[str, Any]:
    """One planned run, trained and evaluated (each kept if already done); returns its metrics."""
    train_once(run.recipe, run.run_dir, run.seed, quick, list(run.overrides))
    return evaluate_once(run.run_dir, run.evaluation)


def run_exp2(plan: Plan, model_path: str) -> Path:
    """Experiment 2 on a local model: log-prob of the parent and of the child from the paper's few-shot prompt."""
    folder = plan.output / "exp2"
    if run_folder.read_metrics(folder, "exp2") is not None:
        print(f"[reproduce] {run_folder.metrics_path(folder, 'exp2')} already written: kept")
        return folder
    dataset = ensure_dataset("reversal-exp2", exp2_data)
    print(f"[reproduce] Experiment 2 on {plan.model} -> {folder}", flush=True)
    evaluate_exp2(
        Exp2Arguments(
            backend="hf",
            model=model_path,
            dataset=str(dataset),
            output=folder,
            max_pairs=QUICK_EXAMPLES_PER_SPLIT if plan.quick else None,
        )
    )
    return folder


def run_exp1_base_model(plan: Plan, model_path: str) -> Path:
    """Experiment 1 on the model before finetuning: in context as Appendix B.6 scored it, and the held-out splits as
    the untrained control of the exact-match and likelihood tests."""
    folder = plan.output / BASE_MODEL_EXP1
    if run_folder.read_metrics(folder, "exp1") is not None:
        print(f"[reproduce] {run_folder.metrics_path(folder, 'exp1')} already written: kept")
        return folder
    print(f"[reproduce] Experiment 1 on {plan.model}, not finetuned -> {folder}", flush=True)
    limit = QUICK_EXAMPLES_PER_SPLIT if plan.quick else None
    evaluate_exp1(
        Exp1Arguments(
            model=model_path,
            dataset=str(DATASETS_DIR / "reversal-exp1"),
            output=folder,
            in_context=True,
            max_examples_per_split=limit,
        )
    )
    return folder


def provenance_commits(run_dirs: list[Path]) -> list[str]:
    """The commits the runs were trained at (several when a study was resumed after a change)."""
    infos = [run_folder.read_run_info(run_dir) for run_dir in run_dirs]
    return sorted({str(info["git_commit"]) for info in infos if info and info.get("git_commit")})


def provenance(plan: Plan, run_dirs: list[Path]) -> dict[str, Any]:
    """The command, machine, date and code of this job, so a reader can rerun it and know what to expect."""
    commits = provenance_commits(run_dirs)
    command = ["make", "reproduce-full" if plan.full else "reproduce", f"SEEDS={plan.seeds}"]
    if plan.full:
        command += [f"EXP3_SEEDS={plan.exp3_seeds}", f"PROMPT_TUNING_SEEDS={plan.prompt_tuning_seeds}"]
    return {
        "command": " ".join([*command, *(["QUICK=1"] if plan.quick else []), f"OUT={plan.output}"]),
        "date": datetime.now(UTC).date().isoformat(),
        "git_commit": commits[0] if len(commits) == 1 else commits,  # several: the runs were trained apart
        "machine": machine_info(),
    }


def aggregate_metrics(report_json: Path, plan: Plan, run_dirs: list[Path], seconds: float) -> dict[str, Any]:
    """`metrics.json`: the report's numbers per subset and direction, and the run folders they come from."""
    report = files.read_json(report_json)
    return {
        "provenance": provenance(plan, run_dirs),
        "exp1_exact_match": report["exp1_table1"],
        "exp1_likelihood": report["exp1_likelihood"],
        "exp1_in_context": report.get("exp1_in_context"),
        "prompt_tuning": report.get("prompt_tuning"),
        "exp2": report.get("exp2"),
        "exp3": report.get("exp3"),
        "exp3_curves": report.get("exp3_curves"),
        "paper": report["paper"],
        "run_dirs": [str(d) for d in run_dirs],
        "pending": [str(d) for d in plan.step_dirs() if d not in run_dirs],  # not yet finished: a partial study
        "wall_time_s": round(seconds, 1),  # this invocation
        "timeline": timeline_summary(plan.output),  # every invocation: a study resumed across sessions
    }


def finished_steps(plan: Plan) -> list[Path]:
    """The plan's folders (Exp 2's, then each run's) whose evaluation is written, in plan order."""
    finished = []
    for folder in plan.step_dirs():
        info = run_folder.read_run_info(folder) or {"experiment": "exp1" if folder.name == BASE_MODEL_EXP1 else "exp2"}
        if run_folder.read_metrics(folder, info.get("experiment")) is not None:
            finished.append(folder)
    return finished


def write_summary(plan: Plan, run_dirs: list[Path], seconds: float) -> Path:
    """The report, figures and `metrics.json` of the steps finished so far (`pending` names the others)."""
    report = write_report(run_dirs, plan.output, title=f"The Reversal Curse, reproduced with {plan.model}")
    files.write_json(
        plan.output / "metrics.json", aggregate_metrics(plan.output / "report.json", plan, run_dirs, seconds)
    )
    return report


def report_finished(plan: Plan) -> Path:
    """`--report-only`: the report of what a stopped study has finished, without training or evaluating anything.
    The machine and date in `metrics.json` stay those of the runs (this machine only reported them)."""
    run_dirs = finished_steps(plan)
    if not run_dirs:
        raise ReproduceError(f"{plan.output}: no finished step of this plan to report")
    previous = files.read_json(plan.output / "metrics.json") if (plan.output / "metrics.json").is_file() else {}
    report = write_summary(plan, run_dirs, 0.0)
    if "provenance" in previous:
        metrics = files.read_json(plan.output / "metrics.json")
        kept = {key: previous["provenance"][key] for key in ("date", "machine") if key in previous["provenance"]}
        metrics["provenance"] |= kept | {"reported": datetime.now(UTC).date().isoformat()}
        files.write_json(plan.output / "metrics.json", metrics)
    print("\n" + summary_table(run_dirs))
    pending = len(plan.step_dirs()) - len(run_dirs)
    print(f"\n[reproduce] wrote {report} from {len(run_dirs)} finished step(s), {pending} pending")
    return report


def reproduce(plan: Plan) -> Path:
    """Run the whole job, rewriting the report after every step so that a stopped study has one of what finished;
    returns the report path."""
    started = time.perf_counter()
    dataset = ensure_dataset("reversal-exp1", exp1_data)
    leak_check.check_folder(dataset, "exp1")
    print(f"[reproduce] {dataset}: leak check passed", flush=True)
    model_path = str(prepare_model(plan.model)) if not Path(plan.model).exists() else plan.model
    if plan.exp3_recipe:
        leak_check.check_folder(ensure_dataset("reversal-exp3", exp3_data), "exp3")
    base_model_steps = (partial(run_exp2, plan, model_path), partial(run_exp1_base_model, plan, model_path))
    steps = list(zip(plan.base_model_dirs, base_model_steps, strict=True)) if plan.full else []  # before the hours
    steps += [(run.run_dir, partial(train_and_evaluate, run, plan.quick)) for run in plan.training_runs()]
    run_dirs: list[Path] = []
    for folder, step in steps:
        timed(plan.output, folder.name, step)
        run_dirs.append(folder)
        report = write_summary(plan, run_dirs, time.perf_counter() - started)
    print("\n" + summary_table(run_dirs))
    seconds = time.perf_counter() - started
    print(f"\n[reproduce] wrote {report} and {plan.output / 'metrics.json'} in {seconds:.0f} s")
    return report


def study_parser(prog: str, description: str, seeds_help: str) -> argparse.ArgumentParser:
    """The options every training study shares (`reproduce`, `mitigate`): how many seeds, and whether quick."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--seeds", type=int, default=3, help=seeds_help)
    parser.add_argument("--quick", action="store_true", help="a few steps and examples: checks the plumbing (CI)")
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = study_parser("reversal-hf reproduce", __doc__.splitlines()[0], "Experiment 1 training seeds (0..N-1)")
    parser.add_argument(
        "--full",
        action="store_true",
        help="as the paper ran them: also in-context Exp 1, Exp 3 to its stopping rule, prompt tuning, and Exp 2",
    )
    parser.add_argument("--dry-run", action="store_true", help="print every run and evaluation, run nothing")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report and metrics.json of the steps finished so far (a stopped study), run nothing",
    )
    parser.add_argument(
        "--exp3-seeds", type=int, default=5, help="--full: Experiment 3 seeds per instruction order (the paper's 5)"
    )
    parser.add_argument(
        "--prompt-tuning-seeds", type=int, default=10, help="--full: Appendix B.8 seeds, each with its control (10)"
    )
    parser.add_argument("--model", default="tiny-exp1", help="registered model name or folder (default tiny-exp1)")
    parser.add_argument("--output", type=Path, default=Path("results/reproduce"), help="results folder")
    return parser


def plan_from_args(args: argparse.Namespace) -> Plan:
    for option in ("seeds", "exp3_seeds", "prompt_tuning_seeds"):
        if getattr(args, option) < 1:
            raise ReproduceError(f"--{option.replace('_', '-')} must be at least 1")
    family = "tiny" if args.model.startswith("tiny") else args.model.replace("-", "_")
    prompt_tuning = f"exp1_{family}_prompt_tuning"
    return Plan(
        model=args.model,
        exp1_recipe=f"exp1_{family}",
        exp3_recipe=f"exp3_{family}" if args.full else None,
        seeds=args.seeds,
        quick=args.quick,
        output=args.output,
        # Appendix B.8 where the model has a prompt-tuning recipe (the tiny models do not)
        prompt_tuning_recipe=prompt_tuning if args.full and (RECIPES_DIR / f"{prompt_tuning}.yaml").is_file() else None,
        exp3_seeds=args.exp3_seeds,
        prompt_tuning_seeds=args.prompt_tuning_seeds,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.dry_run:
        return run_command(lambda: print(plan_from_args(args).describe()), JOB_ERRORS, done=None)
    job = report_finished if args.report_only else reproduce
    return run_command(lambda: job(plan_from_args(args)), JOB_ERRORS, done=None)


if __name__ == "__main__":
    sys.exit(main())
