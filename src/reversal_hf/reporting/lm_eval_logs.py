"""`reversal-hf lm-eval-report OUTPUT_DIR`: our report from lm-eval's per-sample logs of the `reversal_curse` tasks.

lm-eval's own table shows each task's mean; the paper's likelihood test (correct against random completions, paired
over facts) and our Table 1 need the per-sample logs (`lm_eval ... --log_samples --output_path OUTPUT_DIR`). Each
model folder lm-eval wrote becomes a run folder in our format (`eval/<experiment>_metrics.json` and
`_examples.parquet`, docs/ARCHITECTURE.md), so that `report.write_report` builds the tables as for a trained run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from reversal_hf import files, run_folder
from reversal_hf.command import run_command
from reversal_hf.evaluation.exp1 import EXACT_MATCH_SPLITS, LIKELIHOOD_SPLITS
from reversal_hf.evaluation.exp3 import CONFIGS as EXP3_CONFIGS
from reversal_hf.evaluation.metrics import exact_match, likelihood_test
from reversal_hf.reporting.report import summary_table, write_report
from reversal_hf.reporting.runs import ReportInputError

TASK_PREFIX = "reversal_curse_"
# Task name -> our split key: each generation task scores one split, each likelihood task one reverse test.
EXP1_GENERATE = {f"{TASK_PREFIX}exp1_{key.replace('/', '_')}": key for key in EXACT_MATCH_SPLITS}
EXP1_LIKELIHOOD = {f"{TASK_PREFIX}exp1_{key.replace('/', '_')}_likelihood": key for key in LIKELIHOOD_SPLITS}
EXP3_GENERATE = {f"{TASK_PREFIX}exp3_{config}": f"{config}/test" for config in EXP3_CONFIGS}
EXP2_LIKELIHOOD = {f"{TASK_PREFIX}exp2_{role}_likelihood": role for role in ("parent", "child")}
# lm-eval names a log `samples_<task>_<timestamp>.jsonl`; a rerun into the same folder adds a later timestamp.
SAMPLES_FILE = re.compile(r"samples_(?P<task>.+)_(?P<time>\d{4}-\d{2}-\d{2}T[\d.-]+)\.jsonl")
RECIPE = "lm-eval"


def latest_samples(model_dir: Path) -> dict[str, Path]:
    """The newest per-sample log of each task in one lm-eval model folder."""
    found: dict[str, tuple[str, Path]] = {}
    for path in model_dir.glob("samples_*.jsonl"):
        match = SAMPLES_FILE.fullmatch(path.name)
        if match and match["time"] > found.get(match["task"], ("", path))[0]:
            found[match["task"]] = (match["time"], path)
    return {task: path for task, (_, path) in found.items()}


def read_samples(path: Path) -> list[dict[str, Any]]:
    """One log's samples in document order (lm-eval writes them in the order its batches finished)."""
    try:
        samples = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as error:
        raise ReportInputError(f"{path}: unreadable lm-eval sample log ({error})") from error
    return sorted(samples, key=lambda sample: sample["doc_id"])


def model_name(model_dir: Path) -> str:
    """The evaluated model as lm-eval's newest results file records it (`pretrained=`), else the folder's name."""
    results = sorted(model_dir.glob("results_*.json"))
    if results:
        config = files.read_json(results[-1]).get("config") or {}
        model_args = config.get("model_args")
        if isinstance(model_args, dict) and model_args.get("pretrained"):
            return str(model_args["pretrained"])
    return model_dir.name


def generation_table(samples: list[dict[str, Any]], key: str, target: str) -> pd.DataFrame:
    """Per-example rows of a generation task: the doc's columns, the generation and its paper exact match."""
    return pd.DataFrame(
        [
            {
                **sample["doc"],
                "split": key,
                "doc_id": sample["doc_id"],
                "reference": sample["doc"][target],
                "generation": sample["filtered_resps"][0],
                "exact_match": bool(sample["paper_exact_match"]),
            }
            for sample in samples
        ]
    )


def exact_match_block(tables: dict[str, pd.DataFrame]) -> dict[str, dict[str, Any]]:
    """`{"<config>/<split>": {"accuracy", "n"}}` by our metric, from lm-eval's generations."""
    return {key: exact_match(table["generation"], table["reference"]) for key, table in tables.items()}


def likelihood_rows(samples: list[dict[str, Any]], key: str) -> pd.DataFrame:
    """Per prompt: the correct completion's log-prob (choice 0) and the mean over its random completions."""
    rows = []
    for sample in samples:
        logprobs = [float(response[0]) for response in sample["filtered_resps"]]
        rows.append(
            {
                "split": key,
                "doc_id": sample["doc_id"],
                "name": sample["doc"]["name"],
                "prompt": sample["doc"]["prompt"],
                "correct_logprob": logprobs[0],
                "random_logprobs": logprobs[1:],
                "random_logprob": statistics.fmean(logprobs[1:]),
                "n_random": len(logprobs) - 1,
            }
        )
    return pd.DataFrame(rows)


def per_fact_likelihood(rows: pd.DataFrame) -> dict[str, Any]:
    """The paper's test as our evaluator runs it on summed log-probs: each fact's prompts averaged first, then the
    `reversal_accuracy` likelihood test across facts. lm-eval logs no token counts, so there is no per-token test."""
    per_fact = rows.groupby("name", sort=True)[["correct_logprob", "random_logprob"]].mean()
    result = likelihood_test(
        per_fact["correct_logprob"].tolist(), per_fact["random_logprob"].tolist(), int(rows["n_random"].min())
    )
    return {**result, "facts": per_fact.index.tolist()}


def exp2_metrics(logs: dict[str, Path], model: str) -> dict[str, Any] | None:
    """Our `hf` back-end's Exp 2 metrics from the two likelihood tasks (mean exp(log-prob) per direction)."""
    if not all(task in logs for task in EXP2_LIKELIHOOD):
        return None
    accuracy = {}
    for task, role in EXP2_LIKELIHOOD.items():
        samples = read_samples(logs[task])
        accuracy[role] = statistics.fmean(float(sample["probability"]) for sample in samples)
    return {
        "experiment": "exp2",
        "model": model,
        "backend": "hf",
        "parent_accuracy": accuracy["parent"],
        "child_accuracy": accuracy["child"],
        "n_pairs": len(samples),
        "score": "mean exp(log-prob)",
    }


def with_likelihood(tables: dict[str, pd.DataFrame], likelihood: dict[str, pd.DataFrame]) -> list[pd.DataFrame]:
    """The per-example tables, each split's log-probs beside its generations (the same docs, by `doc_id`, as in our
    evaluator's table); a split only scored by likelihood has rows of its own."""
    merged = dict(tables)
    for key, rows in likelihood.items():
        if key in merged:
            merged[key] = merged[key].merge(rows.drop(columns=["split", "name", "prompt"]), on="doc_id", how="left")
        else:
            merged[key] = rows
    return list(merged.values())


def write_run_folder(model_dir: Path, run_dir: Path) -> list[str]:
    """Our run folder for one lm-eval model folder; returns the experiments it holds."""
    logs = latest_samples(model_dir)
    model = model_name(model_dir)
    experiments: dict[str, dict[str, Any]] = {}

    def generated(tasks: dict[str, str]) -> dict[str, pd.DataFrame]:
        return {
            key: generation_table(read_samples(logs[task]), key, "completion")
            for task, key in tasks.items()
            if task in logs
        }

    exp1 = generated(EXP1_GENERATE)
    likelihood = {key: likelihood_rows(read_samples(logs[t]), key) for t, key in EXP1_LIKELIHOOD.items() if t in logs}
    if exp1 or likelihood:
        tests = {key: per_fact_likelihood(rows) for key, rows in likelihood.items()}
        experiments["exp1"] = {"exact_match": exact_match_block(exp1), "likelihood": tests}
        run_folder.write_table(run_folder.examples_path(run_dir, "exp1"), pd.concat(with_likelihood(exp1, likelihood)))
    exp3 = generated(EXP3_GENERATE)
    if exp3:
        experiments["exp3"] = {"exact_match": exact_match_block(exp3)}
        run_folder.write_table(run_folder.examples_path(run_dir, "exp3"), pd.concat(exp3.values()))
    exp2 = exp2_metrics(logs, model)
    if exp2 is not None:
        experiments["exp2"] = exp2
    if not experiments:
        raise ReportInputError(f"{model_dir}: no per-sample log of a {TASK_PREFIX}* task (run lm_eval --log_samples)")
    source = {"lm_eval_output": str(model_dir), "samples": {task: str(path) for task, path in sorted(logs.items())}}
    run_folder.write_run_info(
        run_dir,
        {"recipe": RECIPE, "seed": 0, "training_mode": "full", "model_name_or_path": model, "lm_eval": source},
    )
    for experiment, metrics in experiments.items():
        run_folder.write_metrics(run_dir, experiment, {**run_folder.metrics_header(experiment, model, None), **metrics})
    return list(experiments)


def model_dirs(output_dir: Path) -> list[Path]:
    """The folders lm-eval wrote per-sample logs into (one per model under `--output_path`), sorted."""
    return sorted({path.parent for path in output_dir.rglob("samples_*.jsonl")})


def lm_eval_report(output_dir: Path, target: Path) -> tuple[list[Path], Path]:
    """A run folder per model lm-eval wrote logs for (`target/runs/<model>`) and their report (`target/report`)."""
    sources = model_dirs(output_dir)
    if not sources:
        raise ReportInputError(f"{output_dir}: no lm-eval per-sample logs (run lm_eval with --log_samples)")
    run_dirs = []
    for source in sources:
        run_dirs.append(target / "runs" / source.name)
        write_run_folder(source, run_dirs[-1])
    return run_dirs, write_report(run_dirs, target / "report", title="The Reversal Curse: lm-eval report")


def agreement(ours: Path, theirs: Path) -> tuple[pd.DataFrame, list[str]]:
    """Split by split, `reversal-hf eval`'s examples in run folder `ours` against lm-eval's in run folder `theirs`
    (one `lm_eval_report` wrote): each side's exact match and on how many rows the two agree. Rows pair by position
    in the split, so both must have scored the same rows (whole splits, or lm-eval's `--limit N` against the first N);
    a pair whose references differ is an error. Also returns a line per disagreeing row, with both generations."""
    rows, differing = [], []
    for experiment in ("exp1", "exp3"):
        paths = [run_folder.examples_path(folder, experiment) for folder in (ours, theirs)]
        if not all(path.is_file() for path in paths):
            continue
        our_table, their_table = (pd.read_parquet(path) for path in paths)
        for split, their_rows in their_table.groupby("split", sort=False):
            if "generation" not in their_rows or their_rows["generation"].isna().all():
                continue  # a likelihood-only split
            our_rows = our_table[our_table["split"] == split].head(len(their_rows))
            references = our_rows["completion"].tolist()
            if references != their_rows["reference"].tolist():
                raise ReportInputError(f"{paths[0]}: {split} holds other rows than lm-eval scored (score whole splits)")
            agree = our_rows["exact_match"].values == their_rows["exact_match"].values
            rows.append(
                {
                    "split": split,
                    "n": len(their_rows),
                    "our exact match": our_rows["exact_match"].mean(),
                    "lm-eval's": their_rows["exact_match"].mean(),
                    "agreement": f"{agree.sum()}/{len(agree)}",
                }
            )
            for (_, mine), (_, other) in zip(our_rows[~agree].iterrows(), their_rows[~agree].iterrows(), strict=True):
                generations = f"ours {mine['generation']!r}, lm-eval {other['generation']!r}"
                differing.append(f"{split} {mine['prompt']!r}: {generations}")
    if not rows:
        raise ReportInputError(f"{ours}: no Exp 1 or Exp 3 examples scored by both (run reversal-hf eval there)")
    return pd.DataFrame(rows), differing


def agreement_text(ours: Path, theirs: Path) -> str:
    table, differing = agreement(ours, theirs)
    table["our exact match"] = table["our exact match"].map("{:.1%}".format)
    table["lm-eval's"] = table["lm-eval's"].map("{:.1%}".format)
    lines = [f"agreement of {theirs} (lm-eval) with {ours} (reversal-hf eval):", table.to_markdown(index=False)]
    return "\n".join(lines + [f"differs: {line}" for line in differing])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reversal-hf lm-eval-report", description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=Path, metavar="OUTPUT_DIR", help="lm_eval's --output_path")
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="where our run folders and report go (default: OUTPUT_DIR/reversal_hf)",
    )
    parser.add_argument(
        "--agree-with",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="a run folder `reversal-hf eval` scored: print per-split exact match and per-example agreement with it",
    )
    args = parser.parse_args(argv)

    def report() -> str:
        run_dirs, report_dir = lm_eval_report(args.output_dir, args.report or args.output_dir / "reversal_hf")
        text = f"{summary_table(run_dirs)}\n\nwrote {report_dir}"
        if args.agree_with is not None:
            text += "".join(f"\n\n{agreement_text(args.agree_with, run_dir)}" for run_dir in run_dirs)
        return text

    return run_command(report, (ReportInputError, files.FileFormatError, OSError), done=str)
