"""`reversal-hf report` on synthetic run folders in the docs/ARCHITECTURE.md contract: expected numbers are computed
here from the inputs, then looked up in report.md, report.json and the terminal summary."""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
import statistics
from pathlib import Path

import pytest
from PIL import Image
from scipy import stats as scipy_stats

from reversal_hf import paper_numbers
from reversal_hf.data import exp2 as exp2_data
from reversal_hf.paths import PAPER_DATA_DIR
from reversal_hf.reporting import markdown, report, tables
from reversal_hf.reporting.runs import ReportInputError, load_runs
from reversal_hf.statistics import FactCounts, accuracy_interval, holm, paired_test, wilson_interval

SEEDS = (0, 1, 2)
EXP1_SPLITS = [f"{s}/{t}" for s in ("p2d", "d2p") for t in ("test", "reverse_test", "reverse_test_randomized")]
EXP1_SPLITS += ["both/test", "all/validation"]
LIKELIHOOD_SPLITS = ("p2d/reverse_test", "d2p/reverse_test")
CURVE_SPLITS = ("p2d/test", "p2d/reverse_test", "d2p/test", "d2p/reverse_test")


def _write_run(folder: Path, info: dict | None, metrics: dict[str, dict], curves: dict | None = None) -> Path:
    (folder / "eval").mkdir(parents=True)
    if info is not None:
        (folder / "run_info.json").write_text(json.dumps(info))
    for experiment, payload in metrics.items():
        (folder / "eval" / f"{experiment}_metrics.json").write_text(json.dumps(payload))
    if curves is not None:
        (folder / "curves.json").write_text(json.dumps(curves))
    return folder


def _curves(rng: random.Random, blocks: dict[str, tuple[str, ...]], epochs: int = 3) -> dict:
    """curves.json of a run evaluated every epoch (2 steps each): a random value per block entry and epoch."""
    points = [
        {"step": 2 * epoch, "epoch": float(epoch), "runtime_s": 0.5}
        | {block: {name: rng.random() for name in names} for block, names in blocks.items()}
        for epoch in range(1, epochs + 1)
    ]
    return {"experiment": "exp1", "every": "epoch", "max_examples": 10, "points": points}


def _info(recipe: str, seed: int, experiment: str = "exp1", mode: str = "full", **hyperparameters) -> dict:
    config = {"learning_rate": 1e-4, "per_device_train_batch_size": 16, "num_train_epochs": 10}
    config |= hyperparameters | {"seed": seed, "output_dir": f"outputs/{recipe}/seed{seed}"}
    return {
        "recipe": recipe,
        "experiment": experiment,
        "training_mode": mode,
        "model_name_or_path": "/work/build/models/tiny-exp1",
        "dataset": {"name": f"reversal-{experiment}", "config": "all", "revision": "v1", "content_hash": "abc"},
        "seed": seed,
        "resolved_config": config,
    }


def _exp1_metrics(rng: random.Random, seed: int, **extra) -> dict:
    likelihood = {
        split: {
            "mean_correct_logprob": -rng.uniform(2, 5),
            "mean_random_logprob": -rng.uniform(2, 5),
            "ttest_statistic": rng.uniform(-1, 1),
            "ttest_pvalue": rng.uniform(0.05, 1),
            "ks_statistic": rng.uniform(0, 0.3),
            "ks_pvalue": rng.uniform(0.05, 1),
            "significant": False,
            "n": 30,
        }
        for split in LIKELIHOOD_SPLITS
    }
    return {
        "experiment": "exp1",
        "run_dir": "x",
        "model": "tiny-exp1",
        "seed": seed,
        "dataset": {"name": "reversal-exp1", "revision": "v1", "content_hash": "abc"},
        "exact_match": {split: {"accuracy": rng.random(), "n": 300} for split in EXP1_SPLITS},
        "likelihood": likelihood,
        **extra,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    root = tmp_path_factory.mktemp("runs")
    rng = random.Random(7)
    in_context = {f"{s}/{o}": {"accuracy": rng.random(), "n": 30} for s in ("p2d", "d2p") for o in ("same", "reverse")}
    main = [
        _write_run(
            root / f"main-s{seed}", _info("exp1_tiny", seed), {"exp1": _exp1_metrics(rng, seed, in_context=in_context)}
        )
        for seed in SEEDS
    ]
    sweep = [
        _write_run(
            root / f"sweep-lr{lr}-bs{bs}-s{seed}",
            # gradient_accumulation_steps follows from the batch size at a fixed total: no sweep axis of its own.
            _info(
                "exp1_sweep",
                seed,
                learning_rate=lr,
                per_device_train_batch_size=bs,
                gradient_accumulation_steps=64 // bs,
            ),
            {"exp1": _exp1_metrics(rng, seed)},
        )
        for lr in (1e-4, 1e-3)
        for bs in (8, 16)
        for seed in (0, 1)
    ]
    prompt_tuning = [
        _write_run(
            root / f"pt-s{seed}",
            _info("exp1_prompt_tuning", seed, mode="prompt_tuning"),
            {
                "exp1": _exp1_metrics(
                    rng, seed, prompt_tuning={n: rng.uniform(1, 4) for n in report.tables.PROMPT_TUNING_LOSSES}
                )
            },
            _curves(rng, {"exact_match": CURVE_SPLITS, "prompt_tuning": report.tables.PROMPT_TUNING_LOSSES}),
        )
        for seed in SEEDS
    ]
    exp2 = [
        _write_run(
            root / "exp2-tiny",
            None,
            {
                "exp2": {
                    "experiment": "exp2",
                    "model": "tiny-exp1",
                    "backend": "hf",
                    "parent_accuracy": 0.4,
                    "child_accuracy": 0.1,
                    "n_pairs": 1513,
                }
            },
        )
    ]
    exp3_metrics = {
        "experiment": "exp3",
        "exact_match": {
            "question_to_answer/test": {"accuracy": 0.85, "n": 100},
            "answer_to_question/test": {"accuracy": 0.03, "n": 100},
        },
    }
    exp3_curves = _curves(rng, {"exact_match": ("question_to_answer/test", "answer_to_question/test")})
    exp3 = [_write_run(root / "exp3-s0", _info("exp3_tiny", 0, experiment="exp3"), {"exp3": exp3_metrics}, exp3_curves)]
    return {"main": main, "sweep": sweep, "prompt_tuning": prompt_tuning, "exp2": exp2, "exp3": exp3}


@pytest.fixture(scope="module")
def written(runs: dict[str, list[Path]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("report") / "out"
    all_dirs = [str(d) for group in runs.values() for d in group]
    assert report.main([*all_dirs, "--output", str(output), "--title", "Synthetic"]) == 0
    return output


def _metric(run_dir: Path, *path: str) -> float:
    value = json.loads((run_dir / "eval" / "exp1_metrics.json").read_text())
    for key in path:
        value = value[key]
    return value


def _mean_sd(values: list[float], scale: float = 100, digits: int = 1) -> str:
    return f"{scale * statistics.fmean(values):.{digits}f} ± {scale * statistics.stdev(values):.{digits}f}"


def _json(written: Path) -> dict:
    return json.loads((written / "report.json").read_text())


def test_table1_mean_and_sd_over_seeds(runs: dict[str, list[Path]], written: Path) -> None:
    markdown = (written / "report.md").read_text()
    assert markdown.startswith("# Synthetic")
    for subset, direction in (("p2d", "NameToDescription"), ("d2p", "DescriptionToName")):
        cells = [
            _mean_sd([_metric(d, "exact_match", split, "accuracy") for d in runs["main"]])
            for split in (f"{subset}/test", f"{subset}/reverse_test", f"{subset}/reverse_test_randomized")
        ]
        paper = paper_numbers.EXP1_TABLE1[subset]
        row = f"| exp1_tiny (tiny-exp1) | 3 | {direction} | {' | '.join(cells)} | {100 * paper['same']:.1f} |"
        assert row in markdown
    table = next(g for g in _json(written)["exp1_table1"] if g["recipe"] == "exp1_tiny")
    assert table["run_dirs"] == [str(d) for d in runs["main"]]
    same = table["rows"][0]["same"]
    expected = {str(d): _metric(d, "exact_match", "p2d/test", "accuracy") for d in runs["main"]}
    assert same["per_run"] == expected
    assert same["mean"] == pytest.approx(statistics.fmean(expected.values()))
    assert same["sd"] == pytest.approx(statistics.stdev(expected.values()))
    assert all(f"`{d}`" in markdown for d in runs["main"])


def test_likelihood_and_in_context(runs: dict[str, list[Path]], written: Path) -> None:
    markdown = (written / "report.md").read_text()
    correct = [_metric(d, "likelihood", "d2p/reverse_test", "mean_correct_logprob") for d in runs["main"]]
    pvalues = ", ".join(f"{_metric(d, 'likelihood', 'd2p/reverse_test', 'ttest_pvalue'):.3g}" for d in runs["main"])
    assert f"| d2p/reverse_test | {tables.SINGLE_DRAW} | {_mean_sd(correct, 1, 3)} |" in markdown
    assert pvalues in markdown
    # Metrics from before every-other-fact scoring hold no per-fact differences: no pooled test, labelled as such.
    test = next(g for g in _json(written)["exp1_likelihood"] if g["recipe"] == "exp1_tiny")["tests"][0]
    assert test["design"] == tables.SINGLE_DRAW and test["pooled"] == {"summed": None, "per_token": None}
    in_context = _metric(runs["main"][0], "in_context", "p2d/reverse", "accuracy")
    row = next(g for g in _json(written)["exp1_in_context"] if g["recipe"] == "exp1_tiny")["rows"][0]
    assert row["reverse"]["mean"] == pytest.approx(in_context) and row["reverse"]["sd"] == 0
    assert "## Experiment 1: in-context (Appendix B.6)" in markdown


def test_in_context_scores_the_base_model_first_and_finetuned_runs_as_extras(
    runs: dict[str, list[Path]], tmp_path: Path
) -> None:
    """Appendix B.6 scored the model that was not finetuned: an evaluation-only folder (no run_info.json) is the main
    row, the finetuned checkpoints follow, labelled as ours."""
    rng = random.Random(3)
    in_context = {f"{s}/{o}": {"accuracy": 0.5, "n": 30} for s in ("p2d", "d2p") for o in ("same", "reverse")}
    base = _write_run(tmp_path / "exp1-base-model", None, {"exp1": _exp1_metrics(rng, 0, in_context=in_context)})
    data = report.collect(load_runs([*runs["main"], base]))
    first, second = data["exp1_in_context"]
    assert (first["role"], first["training_mode"], first["run_dirs"]) == (
        tables.IN_CONTEXT_MAIN,
        "not finetuned",
        [str(base)],
    )
    assert first["group"] == "(tiny-exp1, not finetuned)" and first["rows"][0]["same"]["mean"] == 0.5
    assert second["role"] == tables.IN_CONTEXT_EXTRA and second["recipe"] == "exp1_tiny"
    # Table 1 shows it as the untrained control, with no paper cell beside it.
    untrained = next(group for group in data["exp1_table1"] if group["training_mode"] == "not finetuned")
    assert all(row["paper"] is None for row in untrained["rows"])


def test_sweep_grid_and_prompt_tuning(runs: dict[str, list[Path]], written: Path) -> None:
    data = _json(written)
    (grid,) = data["sweeps"]
    assert (grid["row_key"], grid["col_key"]) == ("learning_rate", "per_device_train_batch_size")
    assert grid["row_values"] == [1e-4, 1e-3] and grid["col_values"] == [8, 16]
    cell = [d for d in runs["sweep"] if "lr0.001-bs8-" in d.name]
    expected = statistics.fmean(_metric(d, "exact_match", "d2p/reverse_test", "accuracy") for d in cell)
    assert grid["mean_accuracy"]["d2p/reverse_test"][1][0] == pytest.approx(expected)
    assert sorted(grid["run_dirs"]) == sorted(str(d) for d in runs["sweep"])
    markdown = (written / "report.md").read_text()
    assert "learning_rate × per_device_train_batch_size" in markdown
    (pt,) = data["prompt_tuning"]
    losses = [_metric(d, "prompt_tuning", "reverse_loss") for d in runs["prompt_tuning"]]
    se = statistics.stdev(losses) / math.sqrt(len(losses))
    assert pt["losses"]["reverse_loss"]["se"] == pytest.approx(se)
    assert f"{statistics.fmean(losses):.3f} ± {se:.3f}" in markdown
    # B.8's comparison: each seed's reverse minus shuffled-reverse loss, paired across seeds (scipy on the same pairs).
    shuffled = [_metric(d, "prompt_tuning", "shuffled_reverse_loss") for d in runs["prompt_tuning"]]
    expected_test = scipy_stats.ttest_rel(losses, shuffled)
    test = pt["reverse_vs_shuffled"]
    assert test["mean_difference"] == pytest.approx(statistics.fmean(losses) - statistics.fmean(shuffled))
    assert test["ttest_pvalue"] == pytest.approx(expected_test.pvalue)
    assert test["ttest_pvalue_holm"] == pytest.approx(expected_test.pvalue)  # a family of one group
    assert test["wilcoxon_pvalue"] == pytest.approx(scipy_stats.wilcoxon(losses, shuffled).pvalue)
    assert "reverse − shuffled [95% CI]" in markdown and "family for Holm's correction: the 1 prompt-tuning" in markdown
    # Table 1's GPT-3 cells are finetuning on every fact: a soft prompt tuned on one fact gets none beside it.
    tuned = next(group for group in data["exp1_table1"] if group["training_mode"] == "prompt_tuning")
    full = next(group for group in data["exp1_table1"] if group["training_mode"] == "full")
    assert all(row["paper"] is None for row in tuned["rows"]) and all(row["paper"] for row in full["rows"])


def test_learning_curves_per_epoch(runs: dict[str, list[Path]], written: Path) -> None:
    """Figure 9 (prompt-tuning losses per epoch, mean ± SE over seeds) and Figure 11 (Exp 3 accuracy per epoch)."""
    data = _json(written)
    (pt,) = data["prompt_tuning_curves"]
    assert [point["epoch"] for point in pt["points"]] == [1.0, 2.0, 3.0] and pt["run_dirs"] == [
        str(d) for d in runs["prompt_tuning"]
    ]
    curves = [json.loads((d / "curves.json").read_text())["points"][1] for d in runs["prompt_tuning"]]
    losses = [point["prompt_tuning"]["reverse_loss"] for point in curves]
    se = statistics.stdev(losses) / math.sqrt(len(losses))
    cell = pt["points"][1]["series"]["reverse_loss"]
    assert cell["mean"] == pytest.approx(statistics.fmean(losses)) and cell["se"] == pytest.approx(se)
    markdown = (written / "report.md").read_text()
    assert "## Prompt tuning losses per epoch (Figure 9)" in markdown
    assert f"| 2 | 4 | {_number_cell(curves, 'same_order_loss')} | {statistics.fmean(losses):.3f} ± {se:.3f} |" in (
        markdown
    )
    (exp1,) = data["exp1_curves"]
    assert list(exp1["points"][0]["series"]) == list(CURVE_SPLITS)
    (exp3,) = data["exp3_curves"]
    exp3_points = json.loads((runs["exp3"][0] / "curves.json").read_text())["points"]
    accuracy = exp3_points[2]["exact_match"]["answer_to_question/test"]
    assert exp3["points"][2]["series"]["answer_to_question/test"]["mean"] == accuracy
    assert "## Experiment 3: accuracy per epoch (Figure 11)" in markdown
    same = exp3_points[2]["exact_match"]["question_to_answer/test"]
    assert f"| 3 | 6 | {100 * same:.1f} | {100 * accuracy:.1f} |" in markdown


def _number_cell(points: list[dict], loss: str) -> str:
    values = [point["prompt_tuning"][loss] for point in points]
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values) / math.sqrt(len(values)):.3f}"


def test_exp2_beside_paper_and_exp3(written: Path) -> None:
    data = _json(written)
    assert data["exp2"]["ours"][0]["parent_accuracy"] == 0.4
    with (PAPER_DATA_DIR / "celebrity_relations" / "llama-7b_reversal_test_results.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    llama = next(m for m in data["exp2"]["paper"] if m["model"] == "llama-7b")
    assert llama["child_score"] == pytest.approx(
        statistics.fmean(math.exp(float(r["llama-7b_child_logprob"])) for r in rows)
    )
    markdown = (written / "report.md").read_text()
    assert "| tiny-exp1 | ours (hf) | 40.0 | 10.0 | mean probability | 1513 |" in markdown
    assert "| gpt-4 | paper | 79.0 | 33.0 | share found while the dataset was built (not an accuracy" in markdown
    # One run without per-example rows: Wilson from its accuracy and n.
    low, high = wilson_interval(85, 100)
    assert f"| question_to_answer/test | same | 85.0 [{100 * low:.1f}, {100 * high:.1f}] | > 80 |" in markdown
    low, high = wilson_interval(3, 100)
    assert f"| answer_to_question/test | reverse | 3.0 [{100 * low:.1f}, {100 * high:.1f}] | < 7 |" in markdown


def test_paper_exp2_scores_are_read_from_the_paper_results_config(tmp_path: Path) -> None:
    config = exp2_data.build_configs(exp2_data.PAPER_EXP2_DIR, ("paper_results",))["paper_results"]["test"]
    accuracies = [row["parent_score"] for row in config if row["model"] == "gpt-3.5-turbo"]
    scores = tables.paper_exp2_scores()
    assert [s["model"] for s in scores] == sorted(exp2_data.PAPER_MODELS)
    (gpt35,) = [s for s in scores if s["model"] == "gpt-3.5-turbo"]
    assert gpt35["parent_score"] == pytest.approx(statistics.fmean(accuracies)) and gpt35["n_pairs"] == len(accuracies)
    assert gpt35["source"] == "data/paper/celebrity_relations/gpt-3.5-turbo_reversal_test_results.csv"
    broken = shutil.copytree(exp2_data.PAPER_EXP2_DIR, tmp_path / "celebrity_relations")
    (broken / "davinci_reversal_test_results.csv").unlink()
    with pytest.raises(ReportInputError, match="^the paper's Experiment 2 results: missing source file .*davinci"):
        tables.paper_exp2_scores(broken)


def test_figures_are_valid_pngs(written: Path) -> None:
    data = _json(written)
    expected = {
        "fig4_logprob.png",
        "fig5_exp2_parent_child.png",
        "fig6_exp3.png",
        "sweep1_exp1.png",
        "fig9_prompt_tuning.png",
        "fig9_prompt_tuning_curves.png",
        "exp1_curves.png",
        "fig11_exp3_curves.png",
    }
    assert set(data["figures"]) == expected
    markdown = (written / "report.md").read_text()
    for name in expected:
        with Image.open(written / name) as image:
            assert image.format == "PNG" and min(image.size) > 200
        assert f"]({name})" in markdown
    assert not list(written.parent.glob(".out.tmp-*"))


def test_summary_table(runs: dict[str, list[Path]]) -> None:
    text = report.summary_table(runs["main"] + runs["exp3"])
    cell = _mean_sd([_metric(d, "exact_match", "d2p/reverse_test", "accuracy") for d in runs["main"]])
    assert "DescriptionToName" in text and cell in text and "KS p" in text and "question_to_answer/test" in text


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda d: (d / "run_info.json").rename(d / "config.json"), "no run_info.json (an unfinished training run)"),
        (lambda d: (d / "eval" / "exp1_metrics.json").unlink(), "no eval/<experiment>_metrics.json"),
        (lambda d: (d / "eval" / "exp1_metrics.json").write_text("{not json"), "not valid JSON"),
        (
            lambda d: (d / "eval" / "exp1_metrics.json").write_text('{"experiment": "exp1"}'),
            "missing field 'exact_match'",
        ),
        (lambda d: (d / "run_info.json").write_text('{"recipe": "r"}'), "missing field 'seed'"),
        (lambda d: (d / "eval" / "exp1_metrics.json").write_text('{"exact_match": {"p2d/test": {}}}'), "'accuracy'"),
        (lambda d: (d / "curves.json").write_text('{"points": [{"step": 1}]}'), "points[0] has no numeric 'step'"),
        (
            lambda d: (d / "curves.json").write_text(
                '{"points": [{"step": 1, "epoch": 1, "exact_match": {"x": "a"}}]}'
            ),
            "points[0].exact_match holds a value that is not a number",
        ),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture, breakage, message: str) -> None:
    good = _write_run(tmp_path / "good", _info("r", 0), {"exp1": _exp1_metrics(random.Random(0), 0)})
    bad = _write_run(tmp_path / "bad", _info("r", 1), {"exp1": _exp1_metrics(random.Random(1), 1)})
    breakage(bad)
    output = tmp_path / "report"
    assert report.main([str(good), str(bad), "--output", str(output)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(bad) in error and message in error and error.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good"]  # no report, no staging folder


def test_api_and_cli_dispatch(runs: dict[str, list[Path]], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from reversal_hf import cli

    path = report.write_report(runs["exp3"], tmp_path / "exp3-report", title="Exp 3 only")
    assert path == tmp_path / "exp3-report" / "report.md" and path.read_text().startswith("# Exp 3 only")
    assert json.loads(path.with_name("report.json").read_text())["paper"] == paper_numbers.reported()
    assert "figures" in capsys.readouterr().err  # drawing the figures shows progress, in a log file too
    missing = tmp_path / "missing-run"
    assert cli.main(["report", str(missing), "--output", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err == f"error: {missing}: not a folder\n"


def test_exp3_both_orders_side_by_side_and_in_one_sweep_grid(tmp_path: Path) -> None:
    """An Exp 3 sweep over both instruction orders: one grid per order's split, both orders in the Exp 3 table."""
    from reversal_hf.reporting.runs import group_runs, load_runs

    folders, accuracy = [], {}
    for config in ("answer_to_question", "question_to_answer"):
        for lr in (1e-5, 2e-5):
            for batch in (8, 32):
                name = f"{config}/lr{lr}-bs{batch}"
                accuracy[name] = (0.9 if config == "question_to_answer" else 0.0) + lr * 1e3 + batch / 1e3
                info = _info("exp3_llama7b_sweep", 0, "exp3", learning_rate=lr, total_batch_size=batch)
                info["resolved_config"]["dataset_config"] = config
                metrics = {"experiment": "exp3", "exact_match": {f"{config}/test": {"accuracy": accuracy[name]}}}
                folders.append(_write_run(tmp_path / name, info, {"exp3": metrics}))
    groups = group_runs(load_runs(folders), "exp3")
    (grid,) = tables.sweeps(groups, {"exp3": ()})
    assert (grid["row_key"], grid["col_key"]) == ("learning_rate", "total_batch_size")
    assert grid["mean_accuracy"]["question_to_answer/test"][1][0] == pytest.approx(
        accuracy["question_to_answer/lr2e-05-bs8"]
    )
    assert grid["mean_accuracy"]["answer_to_question/test"][0][1] == pytest.approx(
        accuracy["answer_to_question/lr1e-05-bs32"]
    )
    directions = {row["direction"] for group in tables.exp3_table(groups) for row in group["rows"]}
    assert directions == {"same", "reverse"}


def test_a_run_from_before_a_config_key_groups_with_later_seeds_of_its_configuration(tmp_path: Path) -> None:
    """B.8 seeds trained before `prompt_tuning_init` existed were text-initialised: they pool with the later `text`
    seeds, and the random-init control stays a group of its own."""
    from reversal_hf.reporting.runs import group_runs

    folders = []
    for seed, init in enumerate((None, None, "text", "random")):
        info = _info("exp1_prompt_tuning", seed, mode="prompt_tuning")
        if init is not None:
            info["resolved_config"]["prompt_tuning_init"] = init
        metrics = {"experiment": "exp1", "exact_match": {"p2d/test": {"accuracy": 0.5}}}
        folders.append(_write_run(tmp_path / f"seed{seed}", info, {"exp1": metrics}))
    groups = group_runs(load_runs(folders), "exp1")
    assert [(group.varying, len(group.runs)) for group in groups] == [
        ({"prompt_tuning_init": "text"}, 3),
        ({"prompt_tuning_init": "random"}, 1),
    ]


def test_b8_scored_against_any_template_is_kept_apart_from_the_template_matched_seeds(tmp_path: Path) -> None:
    """Seeds whose shuffled reverse prompts came from any template (metrics from before 2026-12-05: no run id, no
    `shuffled_reverse_prompts`) are a group of their own, so the paired reverse − shuffled test never mixes the two."""
    from reversal_hf.reporting.runs import group_runs

    folders = []
    for seed, (run_id, marked) in enumerate([(None, False), (None, False), ("r2", False), (None, True)]):
        info = _info("exp1_prompt_tuning", seed, mode="prompt_tuning", prompt_tuning_init="text") | {"run_id": run_id}
        losses = {"same_order_loss": 0.4, "reverse_loss": 0.3, "shuffled_reverse_loss": 0.1 + seed / 100}
        metrics = {"experiment": "exp1", "exact_match": {"p2d/test": {"accuracy": 0.5}}, "prompt_tuning": losses}
        if run_id:
            metrics["run_id"] = run_id
        if marked:
            losses["shuffled_reverse_prompts"] = "same template"
        folders.append(_write_run(tmp_path / f"seed{seed}", info, {"exp1": metrics}))
    groups = group_runs(load_runs(folders), "exp1")
    assert [(group.varying, group.run_dirs) for group in groups] == [
        ({"shuffled_reverse_prompts": "any template (before 2026-12-05)"}, [str(f) for f in folders[:2]]),
        ({"shuffled_reverse_prompts": "same template"}, [str(f) for f in folders[2:]]),
    ]


# ---------------------------------------------------------------- intervals and pooled likelihood tests (issue 18)

FACTS = [f"Fact {i:02d}" for i in range(30)]


def _examples(folder: Path, rng: random.Random, rate: dict[str, float]) -> None:
    """eval/exp1_examples.parquet: 10 rows per fact and split, right with each split's `rate`; the metrics' exact
    match made to agree with them."""
    import pandas as pd

    rows = pd.DataFrame(
        [
            {"split": split, "name": fact, "exact_match": rng.random() < p}
            for split, p in rate.items()
            for fact in FACTS
            for _ in range(10)
        ]
    )
    rows.to_parquet(folder / "eval" / "exp1_examples.parquet")
    path = folder / "eval" / "exp1_metrics.json"
    metrics = json.loads(path.read_text())
    for split, group in rows.groupby("split"):
        metrics["exact_match"][split] = {"accuracy": float(group["exact_match"].mean()), "n": len(group)}
    path.write_text(json.dumps(metrics))


def _pooled_metrics(rng: random.Random, seed: int, shift: float) -> dict:
    """Metrics of the every-other-fact design: per-fact differences (facts in sorted order), per-token ones too."""
    metrics = _exp1_metrics(rng, seed)
    for split in LIKELIHOOD_SPLITS:
        differences = [shift + rng.gauss(0, 1) for _ in FACTS]
        per_token = [d / 10 for d in differences]
        metrics["likelihood"][split] |= {
            "n_random_per_fact": 29,
            "facts": FACTS,
            "differences": differences,
            "mean_difference": statistics.fmean(differences),
            "per_token": {"differences": per_token, "mean_difference": statistics.fmean(per_token)},
        }
    return metrics


@pytest.fixture(scope="module")
def pooled_runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("pooled")
    rng = random.Random(11)
    folders = []
    for seed in SEEDS:
        folder = _write_run(root / f"s{seed}", _info("exp1_pooled", seed), {"exp1": _pooled_metrics(rng, seed, 0.3)})
        _examples(folder, rng, {split: 0.5 if "reverse" not in split else 0.0 for split in EXP1_SPLITS})
        folders.append(folder)
    single = _write_run(root / "single", _info("exp1_single", 0), {"exp1": _pooled_metrics(rng, 0, 0.0)})
    _examples(single, rng, {split: 0.4 for split in EXP1_SPLITS})
    return [*folders, single]


def test_accuracy_cells_carry_intervals_from_the_per_example_rows(pooled_runs: list[Path], tmp_path: Path) -> None:
    """Three seeds: the bootstrap over facts of their stacked rows; one run: Wilson; all wrong: Wilson on the pool."""
    import pandas as pd

    report.write_report(pooled_runs, tmp_path)
    data = _json(tmp_path)
    groups = {g["recipe"]: g for g in data["exp1_table1"]}
    same = groups["exp1_pooled"]["rows"][0]["same"]
    frames = [pd.read_parquet(d / "eval" / "exp1_examples.parquet") for d in pooled_runs[:3]]
    rows = pd.concat([f[f["split"] == "p2d/test"] for f in frames])
    expected = accuracy_interval(FactCounts.from_rows(rows["name"], rows["exact_match"]), n_runs=3)
    assert same["ci"] == expected and expected["method"].startswith("bootstrap")
    assert same["ci"]["low"] < same["mean"] < same["ci"]["high"]
    reverse = groups["exp1_pooled"]["rows"][0]["reverse"]
    assert reverse["ci"] == {"low": 0.0, "high": pytest.approx(wilson_interval(0, 900)[1]), "method": "wilson"}
    single = groups["exp1_single"]["rows"][0]["same"]
    frame = pd.read_parquet(pooled_runs[3] / "eval" / "exp1_examples.parquet")
    correct = int(frame[frame["split"] == "p2d/test"]["exact_match"].sum())
    assert (single["ci"]["low"], single["ci"]["high"]) == pytest.approx(wilson_interval(correct, 300))
    cell = markdown.percent_cell(same)
    assert f"[{100 * expected['low']:.1f}, {100 * expected['high']:.1f}]" in cell
    assert cell in (tmp_path / "report.md").read_text()


def test_a_one_fact_cell_bootstraps_its_prompts_not_the_one_fact(tmp_path: Path) -> None:
    """B.8 tunes one fact per seed: resampled, one fact is always itself (an interval of width 0 however the seeds
    differ), so the cell resamples the fact's prompts, each prompt's rows of every seed together."""
    import pandas as pd

    rng = random.Random(5)
    prompts, folders = [f"prompt {i}" for i in range(10)], []
    for seed in SEEDS:
        right = [i <= 3 + seed for i in range(10)]  # 4, 5, 6 of the 10 prompts: seeds differ
        folder = _write_run(tmp_path / f"s{seed}", _info("exp1_one_fact", seed), {"exp1": _exp1_metrics(rng, seed)})
        rows = pd.DataFrame({"split": "p2d/test", "name": "Daphne Barrington", "prompt": prompts, "exact_match": right})
        rows.to_parquet(folder / "eval" / "exp1_examples.parquet")
        metrics = json.loads((folder / "eval" / "exp1_metrics.json").read_text())
        metrics["exact_match"]["p2d/test"] = {"accuracy": sum(right) / 10, "n": 10}
        (folder / "eval" / "exp1_metrics.json").write_text(json.dumps(metrics))
        folders.append(folder)

    report.write_report(folders, tmp_path / "report")
    same = _json(tmp_path / "report")["exp1_table1"][0]["rows"][0]["same"]
    correct = [i <= 3 + seed for seed in SEEDS for i in range(10)]
    expected = accuracy_interval(FactCounts.from_rows(prompts * 3, correct), n_runs=3, unit="prompts")
    assert same["ci"] == expected and expected["method"].startswith("bootstrap over prompts")
    assert same["ci"]["low"] < same["mean"] < same["ci"]["high"]


def test_likelihood_is_pooled_over_facts_and_seeds_and_holm_corrected(pooled_runs: list[Path], tmp_path: Path) -> None:
    report.write_report(pooled_runs, tmp_path)
    table = _json(tmp_path)["exp1_likelihood"]
    pooled = next(g for g in table if g["recipe"] == "exp1_pooled")
    test = next(t for t in pooled["tests"] if t["split"] == "d2p/reverse_test")
    per_seed = [_metric(d, "likelihood", "d2p/reverse_test", "differences") for d in pooled_runs[:3]]
    averaged = [statistics.fmean(values) for values in zip(*per_seed, strict=True)]
    expected = paired_test(averaged)
    for key in ("mean_difference", "ci_low", "ci_high", "ttest_pvalue", "wilcoxon_pvalue", "n"):
        assert test["pooled"]["summed"][key] == pytest.approx(expected[key]), key
    assert test["pooled"]["summed"]["n_seeds"] == 3
    assert test["pooled"]["per_token"]["mean_difference"] == pytest.approx(expected["mean_difference"] / 10)
    assert test["design"] == "every other fact's under the template (≥ 29 per prompt)"
    # The family: every pooled test of the table (2 groups × 2 splits), Holm-adjusted per test kind and measure.
    family = [t["pooled"]["summed"] for g in table for t in g["tests"]]
    assert len(family) == 4
    adjusted = holm([t["ttest_pvalue"] for t in family])
    assert [t["ttest_pvalue_holm"] for t in family] == pytest.approx(adjusted)
    text = (tmp_path / "report.md").read_text()
    assert "Family for Holm's correction: the 4 pooled test(s) of this table" in text
    assert markdown.difference_cell(test["pooled"]["summed"]) in text


def test_accuracy_figures_draw_the_95_percent_interval_not_the_sd(tmp_path: Path, monkeypatch) -> None:
    """Figure 6's bars reach each cell's `ci` (asymmetric around the mean), not mean ± SD."""
    from reversal_hf.reporting import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda figure, path: drawn.append(figure) or path)
    cell = {"mean": 0.4, "sd": 0.3, "se": 0.2, "n_seeds": 2, "per_run": {}, "ci": {"low": 0.35, "high": 0.5}}
    group = {"group": "g", "rows": [{"split": "question_to_answer/test", "accuracy": cell}]}
    figures.exp3_figure([group], tmp_path / "fig6.png")
    (bars,) = [container for container in drawn[0].axes[0].containers if hasattr(container, "errorbar")]
    (segment,) = bars.errorbar.lines[2][0].get_segments()
    assert [round(float(y), 6) for _, y in segment] == [0.35, 0.5]
