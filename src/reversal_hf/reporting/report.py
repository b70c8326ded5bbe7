"""`reversal-hf report RUN_DIR... --output DIR`: the paper's tables and figures from evaluated run folders.

Writes `report.md`, `report.json` (every number the Markdown shows, each with the run folders it came from) and PNG
figures. Everything is built in a temporary folder first, so bad input or a failed plot leaves nothing half-written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from huggingface_hub.utils import tqdm

from reversal_hf import __version__, files, paper_numbers
from reversal_hf.command import run_command
from reversal_hf.reporting import figures, tables
from reversal_hf.reporting.markdown import (
    curve_rows,
    exp2_rows,
    exp3_rows,
    in_context_rows,
    likelihood_rows,
    markdown_table,
    number_cell,
    other_splits_rows,
    percent_cell,
    prompt_tuning_rows,
    sweep_rows,
    table1_rows,
    text_table,
)
from reversal_hf.reporting.runs import ReportInputError, Run, group_runs, load_runs

DEFAULT_TITLE = "The Reversal Curse: reproduction report"
SWEEP_SPLITS = {"exp1": tables.EXP1_SWEEP_SPLITS, "exp3": ()}
# Accuracy-per-epoch sections: (report data key, heading, figure file, figure title).
CURVE_SECTIONS = (
    ("exp1_curves", "Experiment 1: exact match per epoch", "exp1_curves.png", "Experiment 1: held-out exact match"),
    (
        "exp3_curves",
        "Experiment 3: accuracy per epoch (Figure 11)",
        "fig11_exp3_curves.png",
        "Figure 11 style: Experiment 3 held-out accuracy per epoch",
    ),
)


def collect(runs: list[Run]) -> dict[str, Any]:
    """Every table of the report, as JSON-ready numbers."""
    exp1, exp3 = group_runs(runs, "exp1"), group_runs(runs, "exp3")
    return {
        "exp1_table1": tables.exp1_table(exp1),
        "exp1_likelihood": tables.likelihood_table(exp1),
        "exp1_in_context": tables.in_context_table(exp1),
        "exp2": tables.exp2_table(runs) if any("exp2" in run.metrics for run in runs) else None,
        "exp3": tables.exp3_table(exp3),
        "sweeps": tables.sweeps(exp1 + exp3, SWEEP_SPLITS),
        "prompt_tuning": tables.prompt_tuning_table(exp1 + exp3),
        "prompt_tuning_curves": tables.curves_table(exp1, "prompt_tuning"),
        "exp1_curves": tables.curves_table(exp1, "exact_match"),
        "exp3_curves": tables.curves_table(exp3, "exact_match"),
    }


def likelihood_note(table: list[dict[str, Any]]) -> str:
    """What the likelihood table's columns are, the family Holm's correction runs over, and the old design's label."""
    return (
        "Log-probs are per fact (mean over its held-out prompts; the random one also over its random completions), "
        "mean ± SD over seeds. Pooled: each fact's difference (correct minus random) averaged over seeds, then a "
        "paired t-test and a Wilcoxon signed-rank test across facts, two-sided, with a 95% t interval of the mean "
        "difference; per-token: the same on per-token mean log-probs. "
        f"Family for Holm's correction: {tables.likelihood_family(table)}. "
        "Per-seed p-values (the paper's test) are detail, uncorrected. "
        f'Rows marked "{tables.SINGLE_DRAW}" come from runs evaluated with one seeded random completion per prompt; '
        "they have no pooled test (their metrics hold no per-fact differences) until they are evaluated again."
    )


def prompt_tuning_note(table: list[dict[str, Any]]) -> str:
    """What B.8's paired test compares, its family, and what each sign of the difference means."""
    k = sum(1 for group in table if group["reverse_vs_shuffled"])
    return (
        "Losses in nats per token on the tuned fact's held-out prompts: same order; reverse (its reverse prompts); "
        "shuffled reverse (the same completions after other facts' reverse prompts of the same template). "
        "Reverse − shuffled: per seed, then a paired t-test and a Wilcoxon signed-rank test across seeds (two-sided), "
        "with a 95% t interval of the mean; "
        f"family for Holm's correction: the {k} prompt-tuning group(s) of this table. "
        "A difference below 0 means the tuned fact's own reverse prompt makes its completion likelier than other "
        "facts' prompts do (the reverse was learned); 0 or above is no sign of it, and above 0 means the own prompt "
        "makes the completion *less* likely than a random other fact's. A randomly initialised soft prompt "
        "(`prompt_tuning_init=random`) is the control for the fact being in the text the prompt starts from."
    )


def _runs_used(groups: list[dict[str, Any]]) -> str:
    return "Runs:\n" + "\n".join(f"- {g['group']}: " + ", ".join(f"`{d}`" for d in g["run_dirs"]) for g in groups)


def _sweep_figure_name(index: int, grid: dict[str, Any]) -> str:
    return f"sweep{index + 1}_{grid['experiment']}.png"


def _figure_jobs(data: dict[str, Any]) -> list[tuple[str, Callable[[Path], Path]]]:
    """(file name, drawing function) for each figure the data supports."""
    jobs: list[tuple[str, Callable[[Path], Path]]] = []
    if data["exp1_likelihood"]:
        jobs.append(("fig4_logprob.png", lambda p: figures.logprob_figure(data["exp1_likelihood"], p)))
    if data["exp2"]:
        jobs.append(("fig5_exp2_parent_child.png", lambda p: figures.exp2_figure(data["exp2"], p)))
    if data["exp3"]:
        jobs.append(("fig6_exp3.png", lambda p: figures.exp3_figure(data["exp3"], p)))
    for index, grid in enumerate(data["sweeps"]):
        jobs.append((_sweep_figure_name(index, grid), lambda p, g=grid: figures.sweep_figure(g, p)))
    if data["prompt_tuning"]:
        jobs.append(("fig9_prompt_tuning.png", lambda p: figures.prompt_tuning_figure(data["prompt_tuning"], p)))
    if data["prompt_tuning_curves"]:
        jobs.append(
            ("fig9_prompt_tuning_curves.png", lambda p: figures.loss_curves_figure(data["prompt_tuning_curves"], p))
        )
    for key, _, name, title in CURVE_SECTIONS:
        if data[key]:
            jobs.append((name, lambda p, k=key, t=title: figures.accuracy_curves_figure(data[k], p, t)))
    return jobs


def render_markdown(title: str, data: dict[str, Any], figure_files: dict[str, str], runs: list[Run]) -> str:
    """The report: one section per experiment present, each table followed by its figure and the runs it used."""

    def image(name: str, caption: str) -> str:
        return f"\n\n![{caption}]({name})" if name in figure_files else ""

    parts = [
        f"# {title}",
        f"Generated by reversal-hf {__version__} on {data['generated_at']} from {len(runs)} run folder(s). "
        "Accuracies are exact match in %, mean ± SD over seeds (sample SD; one seed shows no SD) [95% interval: "
        "Wilson for one run, a bootstrap over facts with each fact's rows of every seed kept together for several "
        "seeds (over the prompts, each with its rows of every seed, where a cell asks about one fact), 10,000 "
        "resamples, seed 0; Wilson over the pooled rows where every row is right or every row wrong]. "
        f"Paper numbers: {paper_numbers.PAPER_CITATION}.",
    ]
    if data["exp1_table1"]:
        parts += [
            "## Experiment 1: Table 1 (exact match, %)",
            markdown_table(*table1_rows(data["exp1_table1"])),
            "Other splits (%):\n\n" + markdown_table(*other_splits_rows(data["exp1_table1"])),
            _runs_used(data["exp1_table1"]),
        ]
    if data["exp1_likelihood"]:
        parts += [
            "## Experiment 1: correct vs random log-prob (Figure 4)",
            likelihood_note(data["exp1_likelihood"])
            + f" Paper: p > {paper_numbers.EXP1_LOGPROB_PVALUE_ABOVE} for every model."
            + "\n\n"
            + markdown_table(*likelihood_rows(data["exp1_likelihood"]))
            + image("fig4_logprob.png", "Figure 4 style: log-prob of correct vs random completions"),
            _runs_used(data["exp1_likelihood"]),
        ]
    if data["exp1_in_context"]:
        parts += [
            "## Experiment 1: in-context (Appendix B.6)",
            markdown_table(*in_context_rows(data["exp1_in_context"])),
            _runs_used(data["exp1_in_context"]),
        ]
    if data["exp2"]:
        parts += [
            "## Experiment 2: celebrity parents (Figure 5)",
            "Rows scored by likelihood (paper Llama-1 and davinci, our `hf` back-end) show the mean probability "
            "exp(log-prob) of the correct name, as the paper's Figure 5 does; the others are accuracies.\n\n"
            + markdown_table(*exp2_rows(data["exp2"]))
            + image("fig5_exp2_parent_child.png", "Figure 5 style: parent vs child"),
            "Runs:\n"
            + "\n".join(f"- {m['model']}: `{m['run_dir']}`" for m in data["exp2"]["ours"])
            + "\n\nPaper sources: "
            + ", ".join(f"`{m['source']}`" for m in data["exp2"]["paper"]),
        ]
    if data["exp3"]:
        parts += [
            "## Experiment 3: instructions (Figure 6)",
            markdown_table(*exp3_rows(data["exp3"])) + image("fig6_exp3.png", "Figure 6 style: Experiment 3"),
            _runs_used(data["exp3"]),
        ]
    for index, grid in enumerate(data["sweeps"]):
        parts += [
            f"## Sweep {index + 1}: {grid['recipe']} ({grid['model']}), {grid['row_key']} × {grid['col_key']}",
            "Mean accuracy over seeds (%), as in Figures 7/8/10.\n\n"
            + markdown_table(*sweep_rows(grid))
            + image(_sweep_figure_name(index, grid), f"Sweep {index + 1} heatmaps"),
            "Runs: " + ", ".join(f"`{d}`" for d in grid["run_dirs"]),
        ]
    if data["prompt_tuning"]:
        parts += [
            "## Prompt tuning losses (Figure 9, Appendix B.8)",
            prompt_tuning_note(data["prompt_tuning"])
            + "\n\n"
            + markdown_table(*prompt_tuning_rows(data["prompt_tuning"]))
            + image("fig9_prompt_tuning.png", "Figure 9 style: prompt tuning losses"),
            _runs_used(data["prompt_tuning"]),
        ]
    if data["prompt_tuning_curves"]:
        parts += [
            "## Prompt tuning losses per epoch (Figure 9)",
            "Measured during training on the tuned fact's held-out prompts (`eval_curves`, curves.json); "
            "mean ± SE over seeds.\n\n"
            + markdown_table(*curve_rows(data["prompt_tuning_curves"], lambda e: number_cell(e, "se"), "(± SE)"))
            + image("fig9_prompt_tuning_curves.png", "Figure 9 style: prompt-tuning loss per epoch"),
            _runs_used(data["prompt_tuning_curves"]),
        ]
    for key, heading, name, title in CURVE_SECTIONS:
        if data[key]:
            parts += [
                f"## {heading}",
                "Held-out exact match (%) measured during training (`eval_curves`, curves.json; "
                "`max_examples` rows per split), mean ± SD over seeds.\n\n"
                + markdown_table(*curve_rows(data[key], percent_cell, "(%)"))
                + image(name, title),
                _runs_used(data[key]),
            ]
    return "\n\n".join(parts) + "\n"


def _run_summary(run: Run) -> dict[str, Any]:
    return {"run_dir": run.name, "recipe": run.recipe, "seed": run.info.get("seed"), "experiments": sorted(run.metrics)}


def write_report(run_dirs: list[Path], output_dir: Path, title: str = DEFAULT_TITLE) -> Path:
    """Write report.md, report.json and the figures into `output_dir`; returns the report.md path."""
    runs = load_runs([Path(d) for d in run_dirs])
    data = {
        "title": title,
        "generated_by": f"reversal-hf {__version__}",
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    data |= collect(runs)
    output_dir = Path(output_dir)
    with files.staged_dir(output_dir, merge=True) as staging:
        figure_files = {}
        for name, draw in tqdm(_figure_jobs(data), desc="figures"):
            figure_files[name] = draw(staging / name).name
        data["figures"] = figure_files
        data["paper"] = paper_numbers.reported()
        data["runs"] = [_run_summary(run) for run in runs]
        (staging / "report.md").write_text(render_markdown(title, data, figure_files, runs))
        files.write_json(staging / "report.json", data)
    return output_dir / "report.md"


def summary_table(run_dirs: list[Path]) -> str:
    """Plain-text Exp 1 (and Exp 2/3 when present) results for the terminal."""
    data = collect(load_runs([Path(d) for d in run_dirs]))
    sections = []
    if data["exp1_table1"]:
        sections.append(
            "Experiment 1, exact match (%), mean ± SD over seeds\n" + text_table(*table1_rows(data["exp1_table1"]))
        )
    if data["exp1_likelihood"]:
        sections.append(
            "Experiment 1, correct vs random log-prob (pooled over seeds, Holm-adjusted; p-values per seed)\n"
            + text_table(*likelihood_rows(data["exp1_likelihood"]))
        )
    if data["exp2"]:
        sections.append("Experiment 2, parent vs child\n" + text_table(*exp2_rows(data["exp2"])))
    if data["exp3"]:
        sections.append("Experiment 3, exact match (%)\n" + text_table(*exp3_rows(data["exp3"])))
    return "\n\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reversal-hf report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="evaluated run folders")
    parser.add_argument("--output", type=Path, required=True, help="folder for report.md, report.json and figures")
    parser.add_argument("--title", default=DEFAULT_TITLE, help="the report's title")
    args = parser.parse_args(argv)
    return run_command(
        lambda: write_report(args.run_dirs, args.output, args.title),
        (ReportInputError, OSError),
        done=lambda report: f"{summary_table(args.run_dirs)}\n\nwrote {report}",
    )


if __name__ == "__main__":
    sys.exit(main())
