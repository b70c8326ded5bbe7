"""The report's PNG figures, drawn from the tables' dicts so that a figure never shows a number the tables do not.

Figures are built with matplotlib's object API (`Figure`, rendered by Agg), never pyplot: no global backend or figure
state, so the report works headless and inside other programs.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from reversal_hf import paper_numbers

PARENT_COLOR, CHILD_COLOR = "tab:blue", "tab:red"
DPI = 120


def _wrap(label: str, width: int = 22) -> str:
    return textwrap.fill(label, width, break_long_words=False)


def _new(width: float, height: float, rows: int = 1, columns: int = 1) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, figure.subplots(rows, columns, squeeze=False).ravel()


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    return path


def _error(entry: dict[str, Any] | None, spread: str) -> float:
    return 0.0 if entry is None or entry[spread] is None else entry[spread]


def _interval_bars(entries: list[dict[str, Any] | None], scale: float = 1.0) -> np.ndarray:
    """Error bars (below, above the mean) reaching an accuracy's 95% interval `ci`; none where it has none."""
    bars = np.zeros((2, len(entries)))
    for index, entry in enumerate(entries):
        if entry is not None and entry.get("ci"):
            bars[:, index] = (entry["mean"] - entry["ci"]["low"], entry["ci"]["high"] - entry["mean"])
    return scale * np.clip(bars, 0.0, None)


def _mean(entry: dict[str, Any] | None) -> float:
    return np.nan if entry is None else entry["mean"]


def _pvalue_range(per_run: dict[str, float]) -> str:
    values = sorted(per_run.values())
    if not values:
        return "n/a"
    return f"{values[0]:.2g}" if len(values) == 1 else f"{values[0]:.2g}–{values[-1]:.2g}"


def logprob_figure(likelihood: list[dict[str, Any]], path: Path) -> Path:
    """Figure 4: mean log-prob of the correct vs a random completion per model, with the test p-values."""
    splits = list(dict.fromkeys(test["split"] for group in likelihood for test in group["tests"]))
    figure, axes = _new(max(6, 2.3 * len(likelihood)), 4.5 * len(splits), rows=len(splits))
    x = np.arange(len(likelihood))
    for axis, split in zip(axes, splits, strict=True):
        tests = [next((t for t in group["tests"] if t["split"] == split), None) for group in likelihood]
        for offset, key, name, color in (
            (-0.2, "correct_logprob", "correct", "tab:green"),
            (0.2, "random_logprob", "random", "tab:gray"),
        ):
            means = [_mean(t and t[key]) for t in tests]
            errors = [_error(t and t[key], "sd") for t in tests]
            axis.bar(x + offset, means, 0.4, yerr=errors, capsize=3, color=color, label=f"{name} completion")
        labels = [
            _wrap(group["group"])
            + (
                ""
                if test is None
                else f"\nt p={_pvalue_range(test['ttest_pvalue'])}\nKS p={_pvalue_range(test['ks_pvalue'])}"
            )
            for group, test in zip(likelihood, tests, strict=True)
        ]
        axis.set_xticks(x, labels, fontsize=8)
        axis.set_ylabel("mean log-prob (± SD over seeds)")
        axis.set_title(f"{split}: correct vs random")
        axis.legend(fontsize=8, loc="lower right")
    figure.suptitle(
        f"Figure 4 style: reverse-direction likelihood (paper: p > {paper_numbers.EXP1_LOGPROB_PVALUE_ABOVE})"
    )
    return _save(figure, path)


def _exp2_label(model: dict[str, Any], source: str) -> str:
    return f"{model['model']}\n({source}{'' if model['score_kind'] == 'accuracy' else ', prob.'})"


def exp2_figure(exp2: dict[str, Any], path: Path) -> Path:
    """Figure 5: parent vs child, our models beside the paper's (Llama and davinci as mean probability)."""
    bars = [(_exp2_label(m, "ours"), m["parent_accuracy"], m["child_accuracy"]) for m in exp2["ours"]]
    bars += [(_exp2_label(m, "paper"), m["parent_score"], m["child_score"]) for m in exp2["paper"]]
    gpt4 = exp2["paper_gpt4"]
    bars.append((f"{gpt4['model']}\n(paper, dataset build)", gpt4["parent_share"], gpt4["child_share"]))
    figure, (axis,) = _new(max(6, 1.3 * len(bars)), 4.5)
    x = np.arange(len(bars))
    axis.bar(x - 0.2, [b[1] for b in bars], 0.4, color=PARENT_COLOR, label="parent (child → parent query)")
    axis.bar(x + 0.2, [b[2] for b in bars], 0.4, color=CHILD_COLOR, label="child (parent → child query)")
    axis.set_xticks(x, [b[0] for b in bars], fontsize=8)
    axis.set_ylabel("accuracy (prob. = mean exp(log-prob); gpt-4: share found building the data)")
    axis.set_ylim(0, 1)
    axis.set_title("Figure 5 style: Experiment 2, finding the parent vs the child")
    axis.legend(fontsize=8)
    return _save(figure, path)


def exp3_figure(exp3: list[dict[str, Any]], path: Path) -> Path:
    """Figure 6: Exp 3 held-out accuracy per instruction order, with the paper's bounds as reference lines."""
    splits = list(dict.fromkeys(row["split"] for group in exp3 for row in group["rows"]))
    figure, (axis,) = _new(max(6, 2.5 * len(exp3)), 4.5)
    x = np.arange(len(exp3))
    width = 0.8 / max(1, len(splits))
    for index, split in enumerate(splits):
        rows = [next((r for r in group["rows"] if r["split"] == split), None) for group in exp3]
        means = [_mean(r and r["accuracy"]) for r in rows]
        errors = _interval_bars([r and r["accuracy"] for r in rows])
        direction = paper_numbers.EXP3_CONFIG_DIRECTION.get(split.split("/")[0], "unknown order")
        offset = (index - (len(splits) - 1) / 2) * width
        axis.bar(x + offset, means, width, yerr=errors, capsize=3, label=f"{split} ({direction})")
    same, reverse = paper_numbers.EXP3_SAME_DIRECTION_ABOVE, paper_numbers.EXP3_REVERSE_BELOW
    axis.axhline(same, ls="--", color="tab:green", label=f"paper: same > {100 * same:.0f}%")
    axis.axhline(reverse, ls=":", color="tab:red", label=f"paper: reverse < {100 * reverse:.0f}%")
    axis.set_xticks(x, [_wrap(group["group"]) for group in exp3], fontsize=8)
    axis.set_xlim(-1, len(exp3))
    axis.set_ylim(0, 1)
    axis.set_ylabel("exact-match accuracy (bars: 95% interval)")
    axis.set_title("Figure 6 style: Experiment 3\n(instructions in the same vs the reverse order)")
    axis.legend(fontsize=8)
    return _save(figure, path)


def sweep_figure(grid: dict[str, Any], path: Path) -> Path:
    """Figures 7/8/10: one heatmap of mean accuracy per split over the two swept hyperparameters."""
    splits = list(grid["mean_accuracy"])
    figure, axes = _new(3.6 * len(splits) + 1, 3.8, columns=len(splits))
    for axis, split in zip(axes, splits, strict=True):
        values = np.array([[np.nan if v is None else v for v in row] for row in grid["mean_accuracy"][split]])
        image = axis.imshow(values, vmin=0, vmax=1, cmap="viridis", origin="lower")
        for (i, j), value in np.ndenumerate(values):
            if not np.isnan(value):
                color = "black" if value > 0.6 else "white"
                axis.text(j, i, f"{100 * value:.0f}", ha="center", va="center", color=color, fontsize=8)
        axis.set_xticks(range(len(grid["col_values"])), [str(v) for v in grid["col_values"]], fontsize=8)
        axis.set_yticks(range(len(grid["row_values"])), [str(v) for v in grid["row_values"]], fontsize=8)
        axis.set_xlabel(grid["col_key"])
        axis.set_ylabel(grid["row_key"])
        axis.set_title(split, fontsize=10)
    figure.colorbar(image, ax=axes.tolist(), label="accuracy (fraction; cells in %)")
    figure.suptitle(f"Sweep: {grid['recipe']} ({grid['model']}), mean accuracy over seeds (%)")
    return _save(figure, path)


def prompt_tuning_figure(table: list[dict[str, Any]], path: Path) -> Path:
    """Figure 9: prompt-tuning losses per configuration, mean ± SE over seeds."""
    figure, (axis,) = _new(max(6, 1.8 * len(table)), 4.5)
    x = np.arange(len(table))
    names = list(table[0]["losses"])
    # Points of one recipe and model are a sweep, drawn as curves; different models are not joined.
    curve = len({(group["recipe"], group["model"]) for group in table}) == 1
    for index, name in enumerate(names):
        means = [_mean(group["losses"][name]) for group in table]
        errors = [_error(group["losses"][name], "se") for group in table]
        offset = (index - (len(names) - 1) / 2) * 0.15
        axis.errorbar(
            x + offset,
            means,
            yerr=errors,
            fmt="-o" if curve else "o",
            capsize=3,
            label=name.removesuffix("_loss").replace("_", " "),
        )
    axis.set_xticks(x, [_wrap(group["group"]) for group in table], fontsize=8)
    axis.set_xlim(-1, len(table))
    axis.set_ylabel("loss (mean ± SE over seeds)")
    axis.set_title("Figure 9 style: prompt-tuning losses\n(same order vs reverse vs shuffled reverse)")
    axis.legend(fontsize=8)
    return _save(figure, path)


def _curve(axis: Any, points: list[dict[str, Any]], name: str, spread: str, label: str) -> None:
    """One series of a curves table against the epoch, its spread over seeds as a band."""
    points = [point for point in points if name in point["series"]]
    x = np.array([point["epoch"] for point in points])
    means = np.array([_mean(point["series"][name]) for point in points])
    errors = np.array([_error(point["series"][name], spread) for point in points])
    (line,) = axis.plot(x, means, "-o", markersize=3, label=label)
    axis.fill_between(x, means - errors, means + errors, alpha=0.2, color=line.get_color())


def _panels(count: int, width: float = 4.8, height: float = 3.8, per_row: int = 3) -> tuple[Figure, np.ndarray]:
    rows, columns = -(-count // per_row), min(count, per_row)
    figure, axes = _new(width * columns + 0.5, height * rows, rows=rows, columns=columns)
    for axis in axes[count:]:
        axis.set_visible(False)
    return figure, axes


def loss_curves_figure(table: list[dict[str, Any]], path: Path) -> Path:
    """Figure 9: the prompt-tuning losses per epoch (mean ± SE over seeds), one panel per run set."""
    figure, axes = _panels(len(table))
    for axis, group in zip(axes, table, strict=False):
        names = list(dict.fromkeys(name for point in group["points"] for name in point["series"]))
        for name in names:
            _curve(axis, group["points"], name, "se", name.removesuffix("_loss").replace("_", " "))
        axis.set_xlabel("epoch")
        axis.set_ylabel("loss (mean ± SE over seeds)")
        axis.set_title(_wrap(group["group"], 45), fontsize=9)
        axis.legend(fontsize=8)
    figure.suptitle("Figure 9 style: prompt-tuning loss per epoch\n(same order vs reverse vs shuffled reverse)")
    return _save(figure, path)


def accuracy_curves_figure(table: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Figure 11: held-out exact-match accuracy per epoch, one panel per split, a line per run set (± SD)."""
    splits = list(dict.fromkeys(name for group in table for point in group["points"] for name in point["series"]))
    figure, axes = _panels(len(splits), per_row=4)
    for axis, split in zip(axes, splits, strict=False):
        for group in table:
            if any(split in point["series"] for point in group["points"]):
                _curve(axis, group["points"], split, "sd", _wrap(group["group"], 45))
        direction = paper_numbers.EXP3_CONFIG_DIRECTION.get(split.split("/")[0])
        axis.set_title(split + (f" ({direction} order)" if direction else ""), fontsize=10)
        axis.set_ylim(-0.02, 1.02)
        axis.set_xlabel("epoch")
        axis.set_ylabel("exact-match accuracy (± SD over seeds)")
        axis.legend(fontsize=7)
    figure.suptitle(title)
    return _save(figure, path)


def mitigation_figure(methods: list[dict[str, Any]], path: Path) -> Path:
    """`reversal-hf mitigate`: forward-question accuracy per method (same direction vs reverse, p2d and d2p), and the
    reverse-mode accuracy of the reverse-trained methods in a panel of its own, never mixed with the forward ones."""
    panels = (
        (
            "forward questions (the paper's protocol)",
            (
                ("p2d/same", "p2d same", "tab:blue"),
                ("p2d/reverse", "p2d reverse", "lightsteelblue"),
                ("d2p/same", "d2p same", "tab:orange"),
                ("d2p/reverse", "d2p reverse", "navajowhite"),
            ),
        ),
        (
            "reverse-mode questions (reverse-trained runs only)",
            (("reverse_mode/p2d", "p2d", "tab:purple"), ("reverse_mode/d2p", "d2p", "plum")),
        ),
    )
    figure, axes = _new(max(7, 1.6 * len(methods)), 8, rows=2)
    x = np.arange(len(methods))
    for axis, (title, bars) in zip(axes, panels, strict=True):
        width = 0.8 / len(bars)
        for index, (key, label, color) in enumerate(bars):
            means = [100 * _mean(method[key]) for method in methods]
            errors = _interval_bars([method[key] for method in methods], scale=100)
            offset = (index - (len(bars) - 1) / 2) * width
            axis.bar(x + offset, means, width, yerr=errors, capsize=2, color=color, label=label)
        axis.set_xticks(x, [_wrap(method["method"], 14) for method in methods], fontsize=8)
        axis.set_xlim(-0.5, len(methods) - 0.5)
        axis.set_ylim(0, 105)
        axis.set_ylabel("exact match % (bars: 95% interval)")
        axis.set_title(title)
        axis.legend(fontsize=8, ncols=len(bars), loc="upper right")
    paper = paper_numbers.EXP1_TABLE1
    figure.suptitle(
        f"Reverse training, tiny model (paper, {paper_numbers.EXP1_TABLE1_MODEL}: reverse "
        f"{100 * paper['p2d']['reverse']:.1f}% p2d, {100 * paper['d2p']['reverse']:.1f}% d2p)"
    )
    return _save(figure, path)
