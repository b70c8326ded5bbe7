"""The results tables of README.md and docs/*.md, generated from committed `results/<name>/metrics.json`.

`reversal-hf readme` rewrites every block between `<!-- results:NAME -->` and `<!-- /results:NAME -->` in README.md
and every page under docs/ from `results/NAME/metrics.json` (a study without one: the first table of
`results/NAME/report.md`); `reversal-hf readme --check` fails when a block has drifted (a test runs it).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from reversal_hf import files
from reversal_hf.command import run_command
from reversal_hf.paths import REPO_ROOT
from reversal_hf.reporting.markdown import (
    difference_cell,
    exp2_rows,
    exp3_rows,
    in_context_rows,
    markdown_table,
    percent_cell,
    pooled_pvalues_cell,
    prompt_tuning_rows,
    pvalues_cell,
)
from reversal_hf.reporting.tables import SINGLE_DRAW

BLOCK = re.compile(r"(<!-- results:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /results:(?P=name) -->)", re.S)
SIGNIFICANCE_ALPHA = 0.05
EXACT_MATCH_HEADERS = [
    "exact match (%), mean ± SD over seeds [95% interval]",
    "same direction",
    "reverse direction",
    "reverse prompts scored against the paper's random completion",
    "paper (GPT-3-175B) same / reverse",
]
LIKELIHOOD_HEADERS = [
    "reverse-direction log-prob per fact, correct vs random",
    "random completions",
    "correct",
    "random",
    "pooled difference [95% CI]",
    "pooled t p (Holm)",
    "pooled Wilcoxon p (Holm)",
    "paired t-test p (per seed)",
    "KS p (per seed)",
    "seeds with t-test p < 0.05",
    "seeds with KS p < 0.05",
]
LIKELIHOOD_SPLITS = {
    "p2d/reverse_test": "`p2d/reverse_test`: the name, given the description (our random names)",
    "d2p/reverse_test": "`d2p/reverse_test`: the description, given the name (our random descriptions)",
    "p2d/reverse_test_randomized_paper": "`p2d/reverse_test`: the name, against the paper's randomized file",
}
LIKELIHOOD_NOTE = (
    "Pooled: each fact's difference in log-prob (correct minus random) averaged over seeds, then one paired t-test and "
    "one Wilcoxon signed-rank test across facts; Holm's correction runs over the pooled tests of this table (one per "
    f'split). Rows marked "{SINGLE_DRAW}" were evaluated with one seeded random completion per prompt and have no '
    "pooled test until evaluated again."
)


def _logprob(entry: dict[str, Any]) -> str:
    spread = "" if entry.get("sd") is None else f" ± {entry['sd']:.2f}"
    return f"{entry['mean']:.2f}{spread}"


def _significant(per_run: dict[str, float | None]) -> str:
    values = [value for value in per_run.values() if value is not None]
    return f"{sum(value < SIGNIFICANCE_ALPHA for value in values)} of {len(values)}"


def provenance_line(metrics: dict[str, Any]) -> str:
    """Command, machine, date and commit of the run that wrote `metrics` (as `reproduce` records them)."""
    run = metrics.get("provenance") or {}
    if not run:
        return "_Provenance not recorded in metrics.json._"
    machine = run.get("machine", {})
    commits = run.get("git_commit", "?")
    commits = ", ".join(f"`{commit[:10]}`" for commit in ([commits] if isinstance(commits, str) else commits))
    pending = metrics.get("pending") or []
    return (
        f"_`{run.get('command', '?')}` on {machine.get('cpu', '?')} (torch CPU capability "
        f"{machine.get('cpu_capability', '?')}, {machine.get('torch_threads', '?')} threads, no GPU), "
        f"{run.get('date', '?')}, commit {commits}, {_time_taken(metrics)}"
        + (f". **Not finished yet**: {', '.join(f'`{Path(step).name}`' for step in pending)}" if pending else "")
        + "._"
    )


def _time_taken(metrics: dict[str, Any]) -> str:
    """Wall time of the job; for one resumed over several sessions, the sum of its steps over every session."""
    timeline = metrics.get("timeline")
    if timeline and timeline["steps"]:
        dates = ", ".join(timeline["dates"])
        return f"{timeline['seconds'] / 3600:.1f} h in all ({timeline['steps']} steps, run on {dates})"
    return f"{metrics.get('wall_time_s', 0) / 60:.1f} min wall"


def exp1_tables(metrics: dict[str, Any]) -> str:
    """Table 1 (exact match per direction) and the correct-vs-random likelihood tests, every number from `metrics`."""
    parts = []
    for group in metrics["exp1_exact_match"]:
        rows = []
        for row in group["rows"]:
            paper = row.get("paper") or {}
            paper_cell = f"{100 * paper['same']:.1f} / {100 * paper['reverse']:.1f}" if paper else "–"
            cells = [
                percent_cell(row["same"]),
                percent_cell(row["reverse"]),
                percent_cell(row["random_baseline"]),
                paper_cell,
            ]
            rows.append([f"{row['direction']} (`{row['subset']}`)", *cells])
        table = markdown_table(EXACT_MATCH_HEADERS, rows)
        scope = " (the tuned fact's held-out rows only)" if group.get("training_mode") == "prompt_tuning" else ""
        parts.append(f"**{group['group']}**, {group['n_seeds']} seed(s){scope}:\n\n{table}")
    for group in metrics["exp1_likelihood"]:
        rows = []
        for test in group["tests"]:
            pooled = (test.get("pooled") or {}).get("summed")
            rows.append(
                [
                    LIKELIHOOD_SPLITS.get(test["split"], f"`{test['split']}`"),
                    test.get("design", SINGLE_DRAW),
                    *map(_logprob, (test["correct_logprob"], test["random_logprob"])),
                    difference_cell(pooled),
                    pooled_pvalues_cell(pooled, "ttest_pvalue"),
                    pooled_pvalues_cell(pooled, "wilcoxon_pvalue"),
                    *map(pvalues_cell, (test["ttest_pvalue"], test["ks_pvalue"])),
                    *map(_significant, (test["ttest_pvalue"], test["ks_pvalue"])),
                ]
            )
        table = markdown_table(LIKELIHOOD_HEADERS, rows)
        parts.append(f"**{group['group']}**, likelihood tests ({LIKELIHOOD_NOTE}):\n\n{table}")
    return "\n\n".join(parts)


# The other tables of a full study (`reproduce --full`), each as the report shows it, beside the paper's cell.
OTHER_TABLES = (
    ("exp1_in_context", "Experiment 1 in context (Appendix B.6), exact match (%)", in_context_rows),
    (
        "prompt_tuning",
        "Prompt tuning on one fact (Appendix B.8), final losses; reverse − shuffled paired across seeds",
        prompt_tuning_rows,
    ),
    ("exp3", "Experiment 3, exact match on the 100 test pairs (%)", exp3_rows),
    ("exp2", "Experiment 2, parent vs child", exp2_rows),
)


def other_tables(metrics: dict[str, Any]) -> str:
    """In context, prompt tuning, Exp 3 and Exp 2, for the studies whose `metrics.json` holds them."""
    return "".join(
        f"\n\n**{title}**:\n\n{markdown_table(*rows(metrics[key]))}"
        for key, title, rows in OTHER_TABLES
        if metrics.get(key)
    )


def report_headline(report: Path) -> str:
    """A report without `metrics.json` (e.g. `reversal-hf mitigate`'s): its "Generated ..." line and first table."""
    lines = report.read_text().splitlines()
    generated = next((line for line in lines if line.startswith("Generated ")), "")
    start = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if start is None:
        raise files.FileFormatError(f"{report}: no table to show")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return f"_{generated}_\n\n" + "\n".join(lines[start:end]) + "\n"


def render_block(results_dir: Path) -> str:
    """The Markdown that stands in the README for one results folder."""
    if not (results_dir / "metrics.json").is_file():
        return report_headline(results_dir / "report.md")
    metrics = files.read_json(results_dir / "metrics.json")
    return f"{provenance_line(metrics)}\n\n{exp1_tables(metrics)}{other_tables(metrics)}\n"


class StaleBlocksError(Exception):
    """`--check` found blocks that differ from their results."""


def pages(root: Path) -> list[Path]:
    """The pages that may hold results blocks: README.md and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def sync(page: Path, results_root: Path, *, check: bool) -> list[str]:
    """Rewrite (or, with `check`, compare) every results block of one page; returns the names of blocks that differ."""
    text = page.read_text()
    stale: list[str] = []

    def replace(match: re.Match[str]) -> str:
        body = render_block(results_root / match["name"])
        if body != match["body"]:
            stale.append(match["name"])
        return f"{match.group(1)}{body}{match.group(4)}"

    updated = BLOCK.sub(replace, text)
    if not check and updated != text:
        files.write_text(page, updated)
    return stale


def sync_pages(page_paths: list[Path], results_root: Path, *, check: bool) -> str:
    """`sync` over every page; with `check`, raises `StaleBlocksError` naming each page's drifted blocks."""
    stale = {page: sync(page, results_root, check=check) for page in page_paths}
    drifted = [f"{page.name}: {', '.join(names)}" for page, names in stale.items() if names]
    if check and drifted:
        raise StaleBlocksError(
            f"results blocks out of date with their metrics.json: {'; '.join(drifted)} (run `reversal-hf readme`)"
        )
    return f"results blocks of {len(page_paths)} page(s) " + ("up to date" if check else "written")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reversal-hf readme", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--pages", type=Path, nargs="+", default=pages(REPO_ROOT), help="default: README.md and docs/*.md"
    )
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results", help="folder of results/<name>/")
    parser.add_argument("--check", action="store_true", help="fail if a block differs from its metrics.json")
    args = parser.parse_args(argv)
    return run_command(
        lambda: sync_pages(args.pages, args.results, check=args.check),
        (StaleBlocksError, files.FileFormatError, KeyError, OSError),
        done=str,
    )
