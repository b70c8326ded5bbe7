"""The report's numbers, as JSON-ready dicts: every statistic keeps the per-run values it was computed from.

Accuracies are fractions; the Markdown shows them as percentages. SD is the sample SD over seeds (ddof=1) and SE is
SD/sqrt(n); both are None for a single seed, where they are undefined. An exact-match accuracy also carries `ci`, its
95% interval (`reversal_hf.statistics.accuracy_interval`: Wilson for one run, a bootstrap over facts for several
seeds, over the prompts where a cell asks about one fact), from the run folders' per-example tables. The likelihood
tests are pooled over seeds per split and Holm-corrected across the table.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from reversal_hf import paper_numbers, run_folder
from reversal_hf.data import exp2 as exp2_data
from reversal_hf.data.hub_layout import DatasetBuildError
from reversal_hf.paths import REPO_ROOT
from reversal_hf.reporting.runs import NOT_FINETUNED, ReportInputError, Run, RunGroup
from reversal_hf.statistics import FactCounts, accuracy_interval, holm, paired_test, wilson_interval

# Table 1 rows: the paper's names for the Exp 1 subsets.
EXP1_DIRECTIONS = {"p2d": "NameToDescription", "d2p": "DescriptionToName"}
EXP1_OTHER_SPLITS = ("both/test", "all/validation")
EXP1_SWEEP_SPLITS = ("p2d/test", "p2d/reverse_test", "d2p/test", "d2p/reverse_test")
IN_CONTEXT_ORDERS = ("same", "reverse")
DATASET_CONFIG_AXIS = "dataset_config"
PROMPT_TUNING_LOSSES = ("same_order_loss", "reverse_loss", "shuffled_reverse_loss")
IN_CONTEXT_MAIN = "not finetuned (the paper's B.6)"
IN_CONTEXT_EXTRA = "finetuned (ours, extra)"


def stat(per_run: dict[str, float]) -> dict[str, Any] | None:
    """Mean, SD and SE over seeds, with the value of each run folder; None when no run has the number."""
    if not per_run:
        return None
    values = list(per_run.values())
    sd = statistics.stdev(values) if len(values) > 1 else None
    return {
        "mean": statistics.fmean(values),
        "sd": sd,
        "se": None if sd is None else sd / math.sqrt(len(values)),
        "n_seeds": len(values),
        "per_run": dict(per_run),
    }


def _collect(group: RunGroup, *path: str) -> dict[str, float]:
    """The number at `path` inside each seed's metrics, for the seeds that have it."""
    found = {}
    for run_dir, metrics in group.metrics():
        value: Any = metrics
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            found[run_dir] = float(value)
    return found


# The column of a per-example table that names the fact a row asks about: the unit the bootstrap resamples.
FACT_COLUMNS = {"exp1": "name", "exp3": "pair_id"}


def fact_counts(
    run_dirs: Sequence[str | Path],
    experiment: str,
    split: str,
    order: Sequence[str] | None = None,
    column: str | None = None,
) -> FactCounts | None:
    """Correct and total rows per fact (or per value of another `column`) of `split`, over the runs'
    `eval/<experiment>_examples.parquet`; None when a run has no such rows (a run evaluated before the table existed,
    or a test's metrics-only folder)."""
    column = column or FACT_COLUMNS[experiment]
    facts: list[str] = []
    correct: list[bool] = []
    for run_dir in run_dirs:
        path = run_folder.examples_path(run_dir, experiment)
        if not path.is_file():
            return None
        table = pd.read_parquet(path, columns=["split", "exact_match", column])
        rows = table[table["split"] == split]
        if rows.empty:
            return None
        facts += rows[column].astype(str).tolist()
        correct += rows["exact_match"].astype(bool).tolist()
    return FactCounts.from_rows(facts, correct, order)


def _interval(group: RunGroup, split: str, examples_split: str, *path: str) -> dict[str, Any] | None:
    """The 95% interval of one accuracy cell: from the per-example rows, or, for one run without them, Wilson from
    its metrics' accuracy and n."""
    counts = fact_counts(group.run_dirs, group.experiment, examples_split)
    if counts is not None and len(counts.facts) == 1 and len(group.runs) > 1:
        # One fact (B.8) resampled is always that fact, a zero-width interval however much seeds differ: resample its
        # prompts instead, each prompt's rows of every seed together (seeds answer a prompt alike, so rows are not n).
        prompts = fact_counts(group.run_dirs, group.experiment, examples_split, column="prompt")
        return accuracy_interval(prompts, len(group.runs), unit="prompts") if prompts else None
    if counts is not None:
        return accuracy_interval(counts, len(group.runs))
    accuracy, n = _collect(group, *path, split, "accuracy"), _collect(group, *path, split, "n")
    if len(group.runs) != 1 or not accuracy or not n:
        return None
    (value,), (rows,) = accuracy.values(), n.values()
    low, high = wilson_interval(round(value * rows), int(rows))
    return {"low": low, "high": high, "method": "wilson"}


def _accuracy(group: RunGroup, split: str, *path: str, prefix: str = "") -> dict[str, Any] | None:
    """Mean ± SD over seeds of the accuracy at `path` (default `exact_match`) for `split`, with its 95% `ci`;
    `prefix` + `split` is the split's name in the per-example table."""
    path = path or ("exact_match",)
    entry = stat(_collect(group, *path, split, "accuracy"))
    if entry is not None:
        entry["ci"] = _interval(group, split, prefix + split, *path)
    return entry


def _group_header(group: RunGroup) -> dict[str, Any]:
    return {
        "group": group.label,
        "recipe": group.recipe,
        "model": group.model,
        "training_mode": group.training_mode,
        "varying": group.varying,
        "n_seeds": len(group.runs),
        "run_dirs": group.run_dirs,
    }


def _per_subset(group: RunGroup, cells: Callable[[RunGroup, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per Experiment 1 subset: its direction and name, then `cells(group, subset)`."""
    return [
        {"direction": direction, "subset": subset, **cells(group, subset)}
        for subset, direction in EXP1_DIRECTIONS.items()
    ]


def _exp1_cells(group: RunGroup, subset: str) -> dict[str, Any]:
    return {
        "same": _accuracy(group, f"{subset}/test"),
        "reverse": _accuracy(group, f"{subset}/reverse_test"),
        "random_baseline": _accuracy(group, f"{subset}/reverse_test_randomized"),
        # Table 1 is GPT-3 finetuned on every fact: no cell of it stands beside a soft prompt tuned on one (B.8).
        "paper": paper_numbers.EXP1_TABLE1[subset] if group.training_mode == "full" else None,
    }


def _in_context_cells(group: RunGroup, subset: str) -> dict[str, Any]:
    return {
        order: _accuracy(group, f"{subset}/{order}", "in_context", prefix="in_context/") for order in IN_CONTEXT_ORDERS
    }


def exp1_table(groups: list[RunGroup]) -> list[dict[str, Any]]:
    """Table 1 per subset, per group: same direction, reverse direction, and the reverse prompts scored against the
    paper's random completions (`reverse_test_randomized`)."""
    table = []
    for group in groups:
        rows = _per_subset(group, _exp1_cells)
        other = {split: _accuracy(group, split) for split in EXP1_OTHER_SPLITS}
        table.append({**_group_header(group), "rows": rows, "other_splits": other})
    return table


SINGLE_DRAW = "one seeded draw per prompt (old design)"


def design(tests: list[dict[str, Any]]) -> str:
    """Which random completions a split's tests compared against, from `n_random_per_fact` (absent: the old design)."""
    counts = {test.get("n_random_per_fact") for test in tests}
    if None in counts:
        return SINGLE_DRAW
    if counts == {1}:
        return "one per prompt"
    return f"every other fact's under the template (≥ {min(counts)} per prompt)"


def pooled_test(tests: list[dict[str, Any]], measure: str = "summed") -> dict[str, Any] | None:
    """One paired t-test and Wilcoxon test over facts × seeds: each fact's differences (correct minus random) averaged
    over the seeds, then tested across facts, with a 95% interval of the mean difference. `measure` `per_token` uses
    the per-token means. None where a seed's metrics hold no per-fact differences (the old single-draw design)."""
    per_fact: dict[str, list[float]] = {}
    for test in tests:
        source = test.get("per_token") if measure == "per_token" else test
        if not source or "differences" not in source or "facts" not in test:
            return None
        for fact, difference in zip(test["facts"], source["differences"], strict=True):
            per_fact.setdefault(fact, []).append(difference)
    if len(per_fact) < 2:
        return None
    return {**paired_test([statistics.fmean(values) for values in per_fact.values()]), "n_seeds": len(tests)}


HOLM_MEASURES = ("summed", "per_token")
HOLM_TESTS = ("ttest_pvalue", "wilcoxon_pvalue")


def apply_holm(table: list[dict[str, Any]]) -> None:
    """Holm's correction across the family of pooled tests of `table` (every model × split row), separately for each
    test (t, Wilcoxon) and measure (summed, per-token): adds `<test>_holm` beside each pooled p-value."""
    for measure in HOLM_MEASURES:
        tests = [test["pooled"][measure] for group in table for test in group["tests"] if test["pooled"][measure]]
        for key in HOLM_TESTS:
            for test, adjusted in zip(tests, holm([test[key] for test in tests]), strict=True):
                test[f"{key}_holm"] = adjusted


def likelihood_family(table: list[dict[str, Any]]) -> str:
    """The family Holm's correction runs over, in words (every table that shows adjusted p-values names it)."""
    k = sum(1 for group in table for test in group["tests"] if test["pooled"]["summed"])
    return (
        f"the {k} pooled test(s) of this table (one per model × split), Holm-adjusted separately for the t-test and "
        "the Wilcoxon test and for summed and per-token log-probs"
    )


def likelihood_table(groups: list[RunGroup]) -> list[dict[str, Any]]:
    """Figure 4's numbers: correct vs random completion log-prob, per seed (t-test and KS p-values, as before) and
    pooled over facts × seeds (paired t and Wilcoxon with a 95% interval, Holm-corrected across the table)."""
    table = []
    for group in groups:
        splits = list(dict.fromkeys(s for _, m in group.metrics() for s in m.get("likelihood", {})))
        tests = []
        for split in splits:
            per_seed = [m["likelihood"][split] for _, m in group.metrics() if split in m.get("likelihood", {})]
            ttest = _collect(group, "likelihood", split, "ttest_pvalue")
            ks = _collect(group, "likelihood", split, "ks_pvalue")
            significant = [
                run for run, m in group.metrics() if m.get("likelihood", {}).get(split, {}).get("significant")
            ]
            tests.append(
                {
                    "split": split,
                    "design": design(per_seed),
                    "correct_logprob": stat(_collect(group, "likelihood", split, "mean_correct_logprob")),
                    "random_logprob": stat(_collect(group, "likelihood", split, "mean_random_logprob")),
                    "ttest_pvalue": ttest,
                    "ks_pvalue": ks,
                    "n_significant": len(significant),
                    "pooled": {measure: pooled_test(per_seed, measure) for measure in HOLM_MEASURES},
                }
            )
        if tests:
            table.append({**_group_header(group), "tests": tests})
    apply_holm(table)
    return table


def in_context_table(groups: list[RunGroup]) -> list[dict[str, Any]]:
    """Appendix B.6: in-context accuracy with the fact in the same vs the reverse order, per subset. The paper scored
    the model that was not finetuned: its rows come first as the main result, finetuned checkpoints follow as ours."""
    table = []
    for group in sorted(groups, key=lambda g: g.training_mode != NOT_FINETUNED):
        rows = _per_subset(group, _in_context_cells)
        if any(row[order] for row in rows for order in IN_CONTEXT_ORDERS):
            role = IN_CONTEXT_MAIN if group.training_mode == NOT_FINETUNED else IN_CONTEXT_EXTRA
            table.append({**_group_header(group), "role": role, "rows": rows})
    return table


def exp2_table(runs: list[Run]) -> dict[str, Any]:
    """Figure 5's numbers: our parent vs child accuracy per evaluated model, beside the paper's models."""
    ours = []
    for run in runs:
        if "exp2" not in run.metrics:
            continue
        metrics = run.metrics["exp2"]
        csvs = sorted(str(p) for p in (run.run_dir / "eval").glob("exp2_*_reversal_test_results.csv"))
        ours.append(
            {
                "model": str(metrics["model"]),
                "backend": metrics.get("backend"),
                "parent_accuracy": float(metrics["parent_accuracy"]),
                "child_accuracy": float(metrics["child_accuracy"]),
                # The hf back-end scores by likelihood, as the paper did for Llama (docs/ARCHITECTURE.md).
                "score_kind": "mean probability" if metrics.get("backend") == "hf" else "accuracy",
                "n_pairs": metrics.get("n_pairs"),
                "run_dir": run.name,
                "results_csv": csvs,
            }
        )
    gpt4 = {**paper_numbers.EXP2_GPT4, "source": paper_numbers.PAPER_CITATION}
    return {"ours": ours, "paper": paper_exp2_scores(), "paper_gpt4": gpt4}


def paper_exp2_scores(source_dir: Path = exp2_data.PAPER_EXP2_DIR) -> list[dict[str, Any]]:
    """Each paper model's parent vs child score over the `paper_results` rows of `reversal-exp2`, by model name.

    Accuracy models average their accuracies; log-prob models (davinci, Llama-1) the probability exp(log-prob), as
    the paper's Figure 5 does."""
    try:
        results = exp2_data.load_paper_results(source_dir)
    except DatasetBuildError as error:
        raise ReportInputError(f"the paper's Experiment 2 results: {error}") from error
    scores = []
    for model, rows in sorted(results.items()):
        logprob = rows[0]["score_kind"] == "logprob"
        to_score = math.exp if logprob else float
        parent, child = (sum(to_score(row[key]) for row in rows) / len(rows) for key in ("parent_score", "child_score"))
        path = exp2_data.results_file(source_dir, model)
        scores.append(
            {
                "model": model,
                "parent_score": parent,
                "child_score": child,
                "score_kind": "mean probability" if logprob else "accuracy",
                "n_pairs": len(rows),
                "source": str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path),
            }
        )
    return scores


def exp3_table(groups: list[RunGroup]) -> list[dict[str, Any]]:
    """Figure 6's numbers: held-out question → answer accuracy per dataset config (instruction order), per group."""
    table = []
    for group in groups:
        splits = list(dict.fromkeys(s for _, m in group.metrics() for s in m["exact_match"]))
        rows = [
            {
                "split": split,
                "direction": paper_numbers.EXP3_CONFIG_DIRECTION.get(split.split("/")[0], "unknown"),
                "accuracy": _accuracy(group, split),
            }
            for split in splits
        ]
        table.append({**_group_header(group), "rows": rows})
    return table


def _sorted_values(values: list[Any]) -> list[Any]:
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    return sorted(values) if numeric else sorted(values, key=str)


def sweeps(groups: list[RunGroup], splits_of: dict[str, tuple[str, ...]]) -> list[dict[str, Any]]:
    """Figures 7/8/10: families whose groups vary over exactly two hyperparameters, as grids of mean accuracy.

    `splits_of` names the accuracies to grid per experiment (empty: every exact-match split found)."""
    families: dict[tuple[str, ...], list[RunGroup]] = {}
    for group in groups:
        families.setdefault(group.family, []).append(group)
    grids = []
    for (experiment, recipe, model, mode), members in families.items():
        # A sweep over both Exp 3 instruction orders varies `dataset_config` too; each split names its config.
        keys = [key for key in members[0].varying if key != DATASET_CONFIG_AXIS]
        if len(keys) != 2:
            continue
        row_key, col_key = keys
        row_values = _sorted_values(list({str(g.varying[row_key]): g.varying[row_key] for g in members}.values()))
        col_values = _sorted_values(list({str(g.varying[col_key]): g.varying[col_key] for g in members}.values()))
        if len(row_values) < 2 or len(col_values) < 2:
            continue
        splits = splits_of.get(experiment) or tuple(
            dict.fromkeys(s for g in members for _, m in g.metrics() for s in m["exact_match"])
        )
        cells: dict[tuple[str, str], list[RunGroup]] = {}
        for g in members:
            cells.setdefault((str(g.varying[row_key]), str(g.varying[col_key])), []).append(g)
        grid = {}
        for split in splits:
            means = []
            for row in row_values:
                line = []
                for col in col_values:
                    accuracies = [
                        stat(_collect(g, "exact_match", split, "accuracy")) for g in cells.get((str(row), str(col)), [])
                    ]
                    accuracy = next((a for a in accuracies if a is not None), None)
                    line.append(None if accuracy is None else accuracy["mean"])
                means.append(line)
            grid[split] = means
        grids.append(
            {
                "experiment": experiment,
                "recipe": recipe,
                "model": model,
                "training_mode": mode,
                "row_key": row_key,
                "col_key": col_key,
                "row_values": row_values,
                "col_values": col_values,
                "mean_accuracy": grid,
                "run_dirs": [d for g in members for d in g.run_dirs],
            }
        )
    return grids


def _reverse_minus_shuffled(group: RunGroup) -> dict[str, Any] | None:
    """B.8's comparison as a paired test across seeds: each seed's reverse loss minus its shuffled-reverse loss
    (nats). Below 0: the tuned fact's own reverse prompt makes its completion likelier than other facts' prompts do,
    the sign of a learned reverse; 0 or above: no sign of it. None below two seeds."""
    reverse, shuffled = (_collect(group, "prompt_tuning", name) for name in ("reverse_loss", "shuffled_reverse_loss"))
    seeds = [run for run in reverse if run in shuffled]
    if len(seeds) < 2:
        return None
    return paired_test([reverse[run] - shuffled[run] for run in seeds])


def prompt_tuning_table(groups: list[RunGroup]) -> list[dict[str, Any]]:
    """Figure 9's numbers: prompt-tuning losses (same order, reverse, shuffled reverse), mean ± SE over seeds, and
    the reverse-vs-shuffled paired test per group, Holm-corrected across the table's groups."""
    table = []
    for group in groups:
        losses = {name: stat(_collect(group, "prompt_tuning", name)) for name in PROMPT_TUNING_LOSSES}
        if any(losses.values()):
            test = _reverse_minus_shuffled(group)
            table.append({**_group_header(group), "losses": losses, "reverse_vs_shuffled": test})
    tests = [group["reverse_vs_shuffled"] for group in table if group["reverse_vs_shuffled"]]
    for key in HOLM_TESTS:
        for test, adjusted in zip(tests, holm([test[key] for test in tests]), strict=True):
            test[f"{key}_holm"] = adjusted
    return table


def curves_table(groups: list[RunGroup], block: str) -> list[dict[str, Any]]:
    """Figures 9 and 11's numbers: one `block` of the runs' curves.json (`prompt_tuning` losses or `exact_match`
    accuracies) per training step, mean ± SD/SE over the group's seeds; groups without it are left out."""
    table = []
    for group in groups:
        points: dict[int, dict[str, Any]] = {}
        for run in group.runs:
            for point in (run.curves or {}).get("points", []):
                for name, value in (point.get(block) or {}).items():
                    if value is None:
                        continue
                    entry = points.setdefault(point["step"], {"step": point["step"], "epoch": point["epoch"]})
                    entry.setdefault("per_run", {}).setdefault(name, {})[run.name] = float(value)
        rows = [
            {"step": entry["step"], "epoch": entry["epoch"]}
            | {"series": {name: stat(per_run) for name, per_run in entry["per_run"].items()}}
            for _, entry in sorted(points.items())
        ]
        if rows:
            table.append({**_group_header(group), "points": rows})
    return table
