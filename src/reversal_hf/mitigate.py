"""`reversal-hf mitigate`: does reverse training, or MLM-U, lift the Reversal Curse? The tiny Experiment 1 model.

Trains `exp1_tiny` as it is (the baseline), at twice its epochs (compute-matched: the tokens of a reverse-trained run),
with each reverse-training transform (data-matched: the baseline's facts and epochs, twice its documents), and with
the MLM-U objective (`exp1_tiny_mlm_u`: a masked LM of the same size on the same documents and epochs), for
N seeds; evaluates every run with the Experiment 1 evaluator (forward questions, the paper's protocol, and, for the
text transforms, reverse-mode questions, reported apart); and writes `report.md`, `report.json` and a figure beside
the paper's baseline numbers. Runs go through `reproduce.train_and_evaluate`, so finished runs are kept and
a rerun resumes (a rerun over committed, evaluated runs rewrites the report without training).

The target is judged against what is reachable: the `both_orders` oracle, trained on every fact in both orders,
answers only about a quarter of DescriptionToName questions reversed, so "reverse as often as same-direction" cannot
be met there by any method. A method meets the target when its reverse accuracy is at least 90% of the oracle's in
both directions (p2d and d2p), with same-direction accuracy not below the low end of the baseline's 95% interval.
Every accuracy carries a 95% interval and every ratio a bootstrap interval over facts (`reversal_hf.statistics`).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from reversal_hf import __version__, files, paper_numbers, run_folder
from reversal_hf.command import run_command
from reversal_hf.configs import read_recipe
from reversal_hf.data import exp1 as exp1_data
from reversal_hf.data import leak_check
from reversal_hf.evaluation.run import RunArguments
from reversal_hf.models import prepare_model
from reversal_hf.precision import machine_info
from reversal_hf.reporting import figures
from reversal_hf.reporting.markdown import NOT_AVAILABLE, likelihood_rows, markdown_table, percent_cell, text_table
from reversal_hf.reporting.runs import RunGroup, load_runs
from reversal_hf.reporting.tables import SINGLE_DRAW, design, fact_counts, likelihood_family, likelihood_table, stat
from reversal_hf.reproduce import (
    JOB_ERRORS,
    QUICK_EXAMPLES_PER_SPLIT,
    PlannedRun,
    ReproduceError,
    ensure_dataset,
    provenance_commits,
    study_parser,
    timed,
    timeline_summary,
    train_and_evaluate,
)
from reversal_hf.statistics import accuracy_interval, ratio_interval

BASE_RECIPE = "exp1_tiny"
MLM_U_RECIPE = f"{BASE_RECIPE}_mlm_u"
MODEL = "tiny-exp1"
TARGET_RATIO = 0.9
ORACLE = "both_orders"
SUBSETS = ("p2d", "d2p")
# Table columns and the metrics split each one reads: forward questions (exact_match), then reverse-mode ones.
FORWARD = {
    "p2d/same": "p2d/test",
    "p2d/reverse": "p2d/reverse_test",
    "d2p/same": "d2p/test",
    "d2p/reverse": "d2p/reverse_test",
}
REVERSE_MODE = {"reverse_mode/p2d": "p2d/test", "reverse_mode/d2p": "d2p/reverse_test"}
PVALUES = {
    f"{subset}/{test}": (f"{subset}/reverse_test", f"{test}_pvalue")
    for subset in ("p2d", "d2p")
    for test in ("ttest", "ks")
}


@dataclass(frozen=True)
class Method:
    """One arm of the study: a recipe, the overrides that make it, and what it is matched against."""

    name: str
    recipe: str
    overrides: tuple[str, ...]
    matching: str


def study_methods() -> list[Method]:
    """The baseline, its compute-matched twin, each reverse-training transform, the MLM-U objective, and the
    both-orders oracle."""
    recipe = read_recipe(BASE_RECIPE)
    epochs = recipe["num_train_epochs"]
    data_matched = "data-matched (baseline facts and epochs)"
    baseline = (
        f"`{BASE_RECIPE}`: the tiny model trained from scratch ({epochs} epochs, lr {recipe['learning_rate']:g}, "
        f"batch {recipe['per_device_train_batch_size']})"
    )
    mlm_u = (
        "compute-matched as the baseline's documents, epochs, batch and lr: a masked LM of its size, mask rate ~ "
        f"U(0, 1) per document, rows of {read_recipe(MLM_U_RECIPE)['max_length']} tokens"
    )
    return [
        Method("baseline", BASE_RECIPE, (), baseline),
        Method("baseline_2x_epochs", BASE_RECIPE, ("--num_train_epochs", str(2 * epochs)), "compute-matched"),
        *(Method(kind, f"{BASE_RECIPE}_reverse_{kind}", (), data_matched) for kind in ("word", "entity", "segment")),
        Method("token", BASE_RECIPE, ("--reversal_transform", "token"), data_matched),
        Method("mlm_u", MLM_U_RECIPE, (), mlm_u),
        Method(ORACLE, f"{BASE_RECIPE}_both_orders", (), "oracle control (every fact in both orders)"),
    ]


def select_methods(names: list[str] | None) -> list[Method]:
    methods = study_methods()
    known = [method.name for method in methods]
    unknown = [name for name in names or [] if name not in known]
    if unknown:
        raise ReproduceError(f"--methods: unknown method {unknown[0]!r}; choose from {', '.join(known)}")
    return [method for method in methods if not names or method.name in names]


def _at(metrics: dict[str, Any], *path: str) -> float | None:
    value: Any = metrics
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def run_numbers(run_dir: Path, metrics: dict[str, Any]) -> dict[str, float | None]:
    """The numbers of one evaluated run that the study's table shows."""
    info = run_folder.read_run_info(run_dir) or {}
    numbers = {"tokens": _at(info, "train_tokens")}
    numbers |= {column: _at(metrics, "exact_match", split, "accuracy") for column, split in FORWARD.items()}
    numbers |= {
        column: _at(metrics, "reverse_mode", "exact_match", split, "accuracy") for column, split in REVERSE_MODE.items()
    }
    numbers |= {column: _at(metrics, "likelihood", split, key) for column, (split, key) in PVALUES.items()}
    return numbers


# The per-example table's split of each accuracy column (reverse-mode rows are prefixed).
EXAMPLES_SPLITS = {**FORWARD, **{column: f"reverse_mode/{split}" for column, split in REVERSE_MODE.items()}}


def summarize(method: Method, runs: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """Mean, SD and per-run values of every column over a method's seeds; each accuracy with its 95% `ci` where the
    runs' per-example tables hold its rows."""
    columns = dict.fromkeys(key for numbers in runs.values() for key in numbers)
    row = {
        "method": method.name,
        "recipe": method.recipe,
        "overrides": list(method.overrides),
        "matching": method.matching,
        "run_dirs": list(runs),
        **{
            column: stat({run: numbers[column] for run, numbers in runs.items() if numbers[column] is not None})
            for column in columns
        },
    }
    for column, split in EXAMPLES_SPLITS.items():
        counts = fact_counts(list(runs), "exp1", split) if row.get(column) else None
        if counts is not None:
            row[column]["ci"] = accuracy_interval(counts, len(runs))
    return row


def _mean(entry: dict[str, Any] | None) -> float | None:
    return None if entry is None else entry["mean"]


def oracle_ratio(row: dict[str, Any], oracle: dict[str, Any] | None, subset: str) -> dict[str, Any] | None:
    """`{"ratio", "low", "high"}`: the method's reverse accuracy over the oracle's on `subset`'s forward reverse
    questions, bootstrapped over facts (the same facts resampled for both; seeds kept together); the point ratio
    without an interval where the per-example tables are missing; None without an oracle or at an oracle of 0."""
    column = f"{subset}/reverse"
    if oracle is None or not _mean(oracle[column]) or row[column] is None:
        return None
    oracle_counts = fact_counts(oracle["run_dirs"], "exp1", FORWARD[column])
    counts = oracle_counts and fact_counts(row["run_dirs"], "exp1", FORWARD[column], oracle_counts.facts)
    if counts is None or oracle_counts is None:
        return {"ratio": _mean(row[column]) / _mean(oracle[column]), "low": None, "high": None}
    return ratio_interval(counts, oracle_counts)


def _floor(entry: dict[str, Any]) -> float:
    """The low end of an accuracy's 95% interval (its mean where it has none)."""
    return (entry.get("ci") or {}).get("low", entry["mean"])


def target_check(row: dict[str, Any], baseline: dict[str, Any] | None, oracle: dict[str, Any] | None) -> dict[str, Any]:
    """Reverse accuracy as a fraction of the oracle's per subset (forward questions), and whether the target is met:
    every fraction at least `TARGET_RATIO` and no same-direction mean below the low end of the baseline's interval."""
    ratios = {subset: oracle_ratio(row, oracle, subset) for subset in SUBSETS}
    kept = {}
    for subset in SUBSETS:
        same, base = row[f"{subset}/same"], (baseline or {}).get(f"{subset}/same")
        if base is not None and same is not None:
            kept[subset] = same["mean"] >= _floor(base)
    met = all(r is not None and r["ratio"] >= TARGET_RATIO for r in ratios.values()) and bool(kept)
    return {"oracle_ratio": ratios, "same_direction_kept": kept, "met": met and all(kept.values())}


def _tokens(entry: dict[str, Any] | None) -> str:
    return NOT_AVAILABLE if entry is None else f"{entry['mean']:,.0f}"


def _pvalue(entry: dict[str, Any] | None) -> str:
    return NOT_AVAILABLE if entry is None else "/".join(f"{value:.2g}" for value in entry["per_run"].values())


def _ratio(value: dict[str, Any] | None) -> str:
    if value is None:
        return NOT_AVAILABLE
    interval = "" if value["low"] is None else f" [{value['low']:.2f}, {value['high']:.2f}]"
    return f"{value['ratio']:.2f}{interval}"


def _is_baseline(row: dict[str, Any]) -> bool:
    return row["method"].startswith("baseline")


def _is_judged(row: dict[str, Any]) -> bool:
    """The target is for the mitigations: neither the baselines nor the oracle it is measured against."""
    return not _is_baseline(row) and row["method"] != ORACLE


def _is_target_met(row: dict[str, Any]) -> str:
    if not _is_judged(row):
        return NOT_AVAILABLE
    return "yes" if row["target"]["met"] else "no"


def table_rows(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "method",
        "matching",
        "tokens trained",
        "p2d same",
        "p2d reverse",
        "d2p same",
        "d2p reverse",
        "reverse-mode p2d",
        "reverse-mode d2p",
        "p2d reverse t / KS p per seed",
        "d2p reverse t / KS p per seed",
        "p2d reverse / oracle's [95% CI]",
        "d2p reverse / oracle's [95% CI]",
        "target met",
    ]
    cells = [
        [
            row["method"],
            row["matching"],
            _tokens(row["tokens"]),
            *(percent_cell(row[column]) for column in (*FORWARD, *REVERSE_MODE)),
            *(f"{_pvalue(row[f'{s}/ttest'])} / {_pvalue(row[f'{s}/ks'])}" for s in ("p2d", "d2p")),
            *(_ratio(row["target"]["oracle_ratio"][subset]) for subset in SUBSETS),
            _is_target_met(row),
        ]
        for row in rows
    ]
    paper = paper_numbers.EXP1_TABLE1
    cells.append(
        [
            f"paper: {paper_numbers.EXP1_TABLE1_MODEL}",
            "Table 1",
            NOT_AVAILABLE,
            *(f"{100 * paper[s][d]:.1f}" for s in ("p2d", "d2p") for d in ("same", "reverse")),
            NOT_AVAILABLE,
            NOT_AVAILABLE,
            f"p > {paper_numbers.EXP1_LOGPROB_PVALUE_ABOVE}",
            f"p > {paper_numbers.EXP1_LOGPROB_PVALUE_ABOVE}",
            NOT_AVAILABLE,
            NOT_AVAILABLE,
            NOT_AVAILABLE,
        ]
    )
    return headers, cells


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """One sentence per method on the target, negative results included."""
    lines = []
    for row in filter(_is_judged, rows):
        target = row["target"]
        ratio = ", ".join(f"{subset} {_ratio(value)}" for subset, value in target["oracle_ratio"].items())
        kept = ", ".join(f"{subset} {'kept' if ok else 'lost'}" for subset, ok in target["same_direction_kept"].items())
        outcome = "meets" if target["met"] else "does not meet"
        lines.append(
            f"- `{row['method']}` {outcome} the target (reverse / oracle's: {ratio}; same-direction: {kept or '–'})."
        )
    return lines


def method_groups(rows: list[dict[str, Any]]) -> list[RunGroup]:
    """Each method's seeds as one group, read from their folders once for the likelihood header and pooled tests."""
    groups = []
    for row in rows:
        runs = load_runs([Path(run_dir) for run_dir in row["run_dirs"]])
        groups.append(RunGroup("exp1", row["method"], runs[0].model, runs[0].training_mode, {}, runs))
    return groups


def likelihood_design(groups: list[RunGroup]) -> str:
    """Which random completions the runs' likelihood tests used (runs evaluated before issue 18 drew one)."""
    tests = [
        metrics["likelihood"][split]
        for group in groups
        for _, metrics in group.metrics()
        for split in (f"{subset}/reverse_test" for subset in SUBSETS)
        if split in metrics.get("likelihood", {})
    ]
    return design(tests) if tests else SINGLE_DRAW


def study_time(data: dict[str, Any]) -> str:
    """Where, at which commit(s), and how long the runs took over every session that ran them."""
    machine, timeline = data["machine"], data["timeline"]
    commits = ", ".join(commit[:10] for commit in data["git_commit"])
    return (
        f"{machine['cpu']}, torch CPU capability {machine['cpu_capability']}, {machine['torch_threads']} threads; "
        f"runs at commit {commits}; {timeline['seconds']:.0f} s of steps over {', '.join(timeline['dates'])}"
    )


def render_markdown(data: dict[str, Any]) -> str:
    headers, cells = table_rows(data["methods"])
    excluded = sorted(
        (row["method"], split, left_out["n"], left_out["templates"])
        for row in data["methods"]
        for split, left_out in row["excluded"].items()
        if left_out["n"]
    )
    lines = [
        "# Reverse training and MLM-U against the Reversal Curse (tiny Experiment 1 model)",
        "",
        f"Generated {data['generated_at']} by reversal-hf {data['generated_by']}: `reversal-hf mitigate --seeds "
        f"{data['seeds']}{' --quick' if data['quick'] else ''}` ({data['wall_time_s']:.0f} s; {study_time(data)}).",
        "",
        "Forward questions are the paper's protocol (held-out templates, exact match). Reverse-mode questions (a "
        "held-out name-first row transformed as in training, cut before the name) are a different test of "
        "reverse-trained models and are never mixed with the forward ones. Accuracies in %, mean ± SD over seeds "
        "[95% interval: a bootstrap over facts, each fact's rows of every seed together, 10,000 resamples, seed 0; "
        "Wilson for one run, or over the pooled rows where every row is right or every row wrong]. p-values are the "
        "correct-vs-random likelihood tests of the reverse split, one per seed "
        f"({data.get('likelihood_design', SINGLE_DRAW)}). The ratio columns divide a method's reverse accuracy by the "
        f"`{ORACLE}` oracle's on the same questions (the most a method trained on these facts is shown to reach), "
        "bootstrapped over facts. `mlm_u` is a masked LM (docs/mitigations.md): it answers by filling the slots "
        "after the prompt left to right up to its end token, and its log-probs are the chain rule in that order.",
        "",
        markdown_table(headers, cells),
        "",
        f"![accuracy per method]({data['figure']})",
        "",
        f"## Target: reverse ≥ {TARGET_RATIO:.0%} of the `{ORACLE}` oracle's reverse accuracy in both directions, "
        "same direction not below the baseline's 95% interval",
        "",
        *(verdicts(data["methods"]) or ["- no reverse-trained method in this study"]),
        "",
    ]
    if data["quick"]:
        lines += [
            "**Quick run** (a few optimizer steps, a few examples per split): it checks the plumbing, not the result.",
            "",
        ]
    if excluded:
        lines += [
            "## Reverse-mode questions left out",
            "",
            "Questions whose transformed prompt stands in a transformed training document are not asked (for `word` "
            "and `entity`, the paper's held-out template 39 cut before the name reads like training template 17; a "
            "`segment` question cut after a few description segments can match a training document too). Counts "
            "are over the whole split:",
            "",
        ]
        lines += [
            f"- `{method}` {split}: {n} (templates {', '.join(map(str, templates)) or '–'})"
            for method, split, n, templates in excluded
        ]
        lines.append("")
    if data.get("likelihood"):
        lines += [
            "## Likelihood, pooled over facts × seeds",
            "",
            "Per fact, the correct completion's log-prob minus the random ones', averaged over the seeds, then a "
            "paired t-test and a Wilcoxon test across facts (each p-value beside its Holm-adjusted one); the family: "
            f"{likelihood_family(data['likelihood'])}.",
            "",
            markdown_table(*likelihood_rows(data["likelihood"])),
            "",
        ]
    lines += ["## Runs", "", *(f"- `{row['method']}`: {', '.join(row['run_dirs'])}" for row in data["methods"]), ""]
    return "\n".join(lines)


def write_report(data: dict[str, Any], output: Path) -> Path:
    """report.md, report.json and the figure, into `output` only once all of them are written."""
    with files.staged_dir(output, merge=True) as staging:
        data["figure"] = figures.mitigation_figure(data["methods"], staging / "mitigations.png").name
        (staging / "report.md").write_text(render_markdown(data))
        files.write_json(staging / "report.json", data)
    return output / "report.md"


def study(methods: list[Method], seeds: int, quick: bool, output: Path) -> Path:
    """Train and evaluate every method and seed (finished ones kept), then write the report; returns its path."""
    started = time.perf_counter()
    dataset = ensure_dataset("reversal-exp1", exp1_data)
    leak_check.check_folder(dataset, "exp1")
    prepare_model(MODEL)
    rows, excluded = [], {}
    evaluation = RunArguments(max_examples_per_split=QUICK_EXAMPLES_PER_SPLIT if quick else None)
    for method in methods:
        runs = {}
        for seed in range(seeds):
            run_dir = output / "runs" / f"{method.name}-seed{seed}"
            run = PlannedRun(method.recipe, seed, run_dir, method.overrides, evaluation)
            metrics = timed(output, run_dir.name, partial(train_and_evaluate, run, quick))
            runs[str(run_dir)] = run_numbers(run_dir, metrics)
            excluded = (metrics.get("reverse_mode") or {}).get("excluded", {})
        rows.append({**summarize(method, runs), "excluded": excluded})
    baseline = next((row for row in rows if row["method"] == "baseline"), None)
    oracle = next((row for row in rows if row["method"] == ORACLE), None)
    for row in rows:
        row["target"] = target_check(row, baseline, oracle)
    groups = method_groups(rows)
    data = {
        "generated_by": __version__,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seeds": seeds,
        "quick": quick,
        "target_ratio": TARGET_RATIO,
        "likelihood_design": likelihood_design(groups),
        "methods": rows,
        # each method's tests pooled over facts × seeds, Holm-corrected across every method × split: the per-seed
        # p-values of the main table are detail, these are the tests the study's claims rest on
        "likelihood": likelihood_table(groups),
        "paper": paper_numbers.reported(),
        "machine": machine_info(),
        "git_commit": provenance_commits([Path(d) for row in rows for d in row["run_dirs"]]),
        "wall_time_s": round(time.perf_counter() - started, 1),  # this invocation
        "timeline": timeline_summary(output),  # every invocation: a study resumed across sessions
    }
    report = write_report(data, output)
    print("\n" + text_table(*table_rows(rows)))
    print(f"\n[mitigate] wrote {report}")
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = study_parser("reversal-hf mitigate", __doc__.splitlines()[0], "training seeds per method (0..N-1)")
    parser.add_argument("--methods", nargs="+", help="run only these methods (default: all)")
    parser.add_argument("--output", type=Path, default=Path("results/mitigations"), help="results folder")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run() -> Path:
        if args.seeds < 1:
            raise ReproduceError("--seeds must be at least 1")
        return study(select_methods(args.methods), args.seeds, args.quick, args.output)

    return run_command(run, JOB_ERRORS, done=None)


if __name__ == "__main__":
    sys.exit(main())
