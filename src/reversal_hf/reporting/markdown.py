"""Every table of the reports as (headers, rows of cells), and the one writer of a table: Markdown or terminal text.

`reversal-hf report`, `reversal-hf readme` and `reversal-hf mitigate` print their tables through `markdown_table` and
`text_table`, with the cells formatted here (a percent with its SD and 95% interval, a pooled test, p-values per seed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from reversal_hf import paper_numbers
from reversal_hf.reporting import tables

NOT_AVAILABLE = "–"
# Each table as (headers, rows of cells): shared by the Markdown report, the README blocks and the terminal summary.
Rows = tuple[list[str], list[list[str]]]


def _percent_value(fraction: float | None) -> str:
    return NOT_AVAILABLE if fraction is None else f"{100 * fraction:.1f}"


def interval_cell(low: float | None, high: float | None, scale: float = 100, digits: int = 1) -> str:
    """A 95% interval as `[low, high]` (percent by default); empty when there is none."""
    if low is None or high is None:
        return ""
    return f" [{scale * low:.{digits}f}, {scale * high:.{digits}f}]"


def percent_cell(entry: dict[str, Any] | None) -> str:
    """`mean ± SD [95% interval]` in %, each part where it exists (an accuracy from before intervals has none)."""
    if entry is None:
        return NOT_AVAILABLE
    spread = "" if entry["sd"] is None else f" ± {_percent_value(entry['sd'])}"
    ci = entry.get("ci") or {}
    return _percent_value(entry["mean"]) + spread + interval_cell(ci.get("low"), ci.get("high"))


def number_cell(entry: dict[str, Any] | None, spread_key: str = "sd") -> str:
    """`mean ± spread` to 3 decimals (a log-prob, a loss); the spread is the SD unless `spread_key` names another."""
    if entry is None:
        return NOT_AVAILABLE
    spread = "" if entry[spread_key] is None else f" ± {entry[spread_key]:.3f}"
    return f"{entry['mean']:.3f}{spread}"


def _pvalue(value: float | None) -> str:
    return NOT_AVAILABLE if value is None else f"{value:.3g}"


def pvalues_cell(per_run: dict[str, float | None]) -> str:
    """One p-value per seed, comma-separated."""
    return ", ".join(_pvalue(value) for value in per_run.values()) or NOT_AVAILABLE


def table1_rows(table: list[dict[str, Any]]) -> Rows:
    headers = [
        "model",
        "seeds",
        "direction",
        "same direction",
        "reverse direction",
        "reverse, scored vs `reverse_test_randomized`",
    ]
    headers += [f"paper same ({paper_numbers.EXP1_TABLE1_MODEL})", "paper reverse"]
    rows = [
        [
            group["group"],
            str(group["n_seeds"]),
            row["direction"],
            percent_cell(row["same"]),
            percent_cell(row["reverse"]),
        ]
        + [
            percent_cell(row["random_baseline"]),
            *(
                (_percent_value(row["paper"]["same"]), _percent_value(row["paper"]["reverse"]))
                if row["paper"]
                else 2 * [NOT_AVAILABLE]
            ),
        ]
        for group in table
        for row in group["rows"]
    ]
    return headers, rows


def other_splits_rows(table: list[dict[str, Any]]) -> Rows:
    return ["model", *tables.EXP1_OTHER_SPLITS], [
        [group["group"], *(percent_cell(group["other_splits"][split]) for split in tables.EXP1_OTHER_SPLITS)]
        for group in table
    ]


def difference_cell(pooled: dict[str, Any] | None) -> str:
    """A pooled test's mean difference (correct minus random) with its 95% interval."""
    if pooled is None:
        return NOT_AVAILABLE
    return f"{pooled['mean_difference']:.3f}" + interval_cell(pooled["ci_low"], pooled["ci_high"], 1, 3)


def pooled_pvalues_cell(pooled: dict[str, Any] | None, key: str) -> str:
    """A pooled p-value and its Holm-adjusted value: `p (Holm p)`."""
    if pooled is None:
        return NOT_AVAILABLE
    return f"{_pvalue(pooled[key])} ({_pvalue(pooled.get(f'{key}_holm'))})"


LIKELIHOOD_HEADERS = [
    "model",
    "split",
    "random completions",
    "correct log-prob",
    "random log-prob",
    "pooled difference [95% CI]",
    "pooled t p (Holm)",
    "pooled Wilcoxon p (Holm)",
    "per-token difference [95% CI]",
    "per-token t p (Holm)",
    "t-test p per seed",
    "KS p per seed",
    "significant seeds",
]


def likelihood_rows(table: list[dict[str, Any]]) -> Rows:
    rows = [
        [
            group["group"],
            test["split"],
            test["design"],
            number_cell(test["correct_logprob"]),
            number_cell(test["random_logprob"]),
        ]
        + [
            difference_cell(test["pooled"]["summed"]),
            pooled_pvalues_cell(test["pooled"]["summed"], "ttest_pvalue"),
            pooled_pvalues_cell(test["pooled"]["summed"], "wilcoxon_pvalue"),
            difference_cell(test["pooled"]["per_token"]),
            pooled_pvalues_cell(test["pooled"]["per_token"], "ttest_pvalue"),
        ]
        + [
            pvalues_cell(test["ttest_pvalue"]),
            pvalues_cell(test["ks_pvalue"]),
            f"{test['n_significant']}/{group['n_seeds']}",
        ]
        for group in table
        for test in group["tests"]
    ]
    return LIKELIHOOD_HEADERS, rows


def in_context_rows(table: list[dict[str, Any]]) -> Rows:
    headers = ["model", "scored", "direction", "same order", "reverse order", "paper (GPT-3) same / reverse"]
    return headers, [
        [group["group"], group["role"], row["direction"], percent_cell(row["same"]), percent_cell(row["reverse"])]
        + [paper_numbers.EXP1_IN_CONTEXT]
        for group in table
        for row in group["rows"]
    ]


def exp2_rows(exp2: dict[str, Any]) -> Rows:
    rows = [
        [m["model"], f"ours ({m['backend'] or 'n/a'})", _percent_value(m["parent_accuracy"])]
        + [_percent_value(m["child_accuracy"]), m["score_kind"], str(m["n_pairs"] or NOT_AVAILABLE)]
        for m in exp2["ours"]
    ]
    rows += [
        [m["model"], "paper", _percent_value(m["parent_score"])]
        + [_percent_value(m["child_score"]), m["score_kind"], str(m["n_pairs"])]
        for m in exp2["paper"]
    ]
    gpt4 = exp2["paper_gpt4"]
    rows.append(
        [gpt4["model"], "paper", _percent_value(gpt4["parent_share"]), _percent_value(gpt4["child_share"])]
        + [gpt4["score_kind"], NOT_AVAILABLE]
    )
    return ["model", "source", "parent (%)", "child (%)", "score", "pairs"], rows


def exp3_rows(table: list[dict[str, Any]]) -> Rows:
    paper = {
        "same": f"> {100 * paper_numbers.EXP3_SAME_DIRECTION_ABOVE:.0f}",
        "reverse": f"< {100 * paper_numbers.EXP3_REVERSE_BELOW:.0f}",
    }
    return ["model", "seeds", "split", "instruction order", "accuracy", "paper (Llama-1 7B-30B)"], [
        [group["group"], str(group["n_seeds"]), row["split"], row["direction"], percent_cell(row["accuracy"])]
        + [paper.get(row["direction"], NOT_AVAILABLE)]
        for group in table
        for row in group["rows"]
    ]


def sweep_rows(grid: dict[str, Any]) -> Rows:
    splits = list(grid["mean_accuracy"])
    rows = []
    for i, row_value in enumerate(grid["row_values"]):
        for j, col_value in enumerate(grid["col_values"]):
            cells = [_percent_value(grid["mean_accuracy"][split][i][j]) for split in splits]
            rows.append([str(row_value), str(col_value), *cells])
    return [grid["row_key"], grid["col_key"], *splits], rows


def prompt_tuning_rows(table: list[dict[str, Any]]) -> Rows:
    headers = ["model", "seeds", *(f"{name} (± SE)" for name in tables.PROMPT_TUNING_LOSSES)]
    headers += ["reverse − shuffled [95% CI]", "t p (Holm)", "Wilcoxon p (Holm)", "paper (Llama-1 7B)"]
    return headers, [
        [group["group"], str(group["n_seeds"])]
        + [number_cell(group["losses"][name], "se") for name in tables.PROMPT_TUNING_LOSSES]
        + [difference_cell(group["reverse_vs_shuffled"])]
        + [pooled_pvalues_cell(group["reverse_vs_shuffled"], key) for key in tables.HOLM_TESTS]
        + [paper_numbers.EXP1_PROMPT_TUNING]
        for group in table
    ]


def _epoch(epoch: float) -> str:
    return f"{round(epoch, 2):g}"


def curve_rows(table: list[dict[str, Any]], cell: Callable[[dict[str, Any] | None], str], unit: str) -> Rows:
    """One row per run set and curve point; a column per series (split or loss) found in any run set."""
    series = list(dict.fromkeys(name for group in table for point in group["points"] for name in point["series"]))
    rows = [
        [group["group"], str(group["n_seeds"]), _epoch(point["epoch"]), str(point["step"])]
        + [cell(point["series"].get(name)) for name in series]
        for group in table
        for point in group["points"]
    ]
    return ["model", "seeds", "epoch", "step", *(f"{name} {unit}" for name in series)], rows


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    return "\n".join([line(headers), "|" + "---|" * len(headers), *map(line, rows)])


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * width for width in widths]), *map(line, rows)])
