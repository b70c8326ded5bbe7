"""The main job end to end, shortened: `make reproduce SEEDS=1 QUICK=1` (one seed, a few steps, a few examples).

The same run also guards the committed results: `results/tiny_exp1_quick/` was written by this very command
(`make reproduce-quick-fixture`) at the commit that wrote `results/tiny_exp1/`, so when code changes what training or
evaluation produce, this test fails until both are regenerated; the numbers can never silently go stale.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reversal_hf import files
from reversal_hf.data.exp3 import CONFIGS as EXP3_CONFIGS
from reversal_hf.paths import REPO_ROOT
from reversal_hf.precision import machine_info
from reversal_hf.reproduce import main

SPLITS = ["p2d/test", "p2d/reverse_test", "d2p/test", "d2p/reverse_test", "both/test", "all/validation"]
COMMITTED_QUICK = REPO_ROOT / "results" / "tiny_exp1_quick"
# Bitwise on the CPU model, kernel kind and thread count that wrote the fixture; elsewhere other SIMD kernels reorder
# sums (an AMD EPYC and an Intel Xeon both report AVX512 and differ in the 7th digit).
OTHER_MACHINE_RTOL = 1e-3


def numbers(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Every number under `exact_match` and `likelihood`, keyed by its path (paths and dates left out)."""
    found: dict[str, float] = {}
    for key, value in metrics.items():
        path = f"{prefix}/{key}"
        if isinstance(value, dict) and (prefix or key in ("exact_match", "likelihood")):
            found |= numbers(value, path)
        elif prefix and isinstance(value, int | float) and not isinstance(value, bool):
            found[path] = float(value)
    return found


def assert_same_numbers(ours: dict[str, float], committed: dict[str, float], rtol: float) -> None:
    assert ours.keys() == committed.keys()
    differ = {
        key: (ours[key], committed[key])
        for key in ours
        if not math.isclose(ours[key], committed[key], rel_tol=rtol, abs_tol=rtol)
    }
    assert not differ, (
        f"results/tiny_exp1* are stale (run `make reproduce-quick-fixture` and `make reproduce`): {differ}"
    )


@pytest.mark.slow
def test_make_reproduce_quick_writes_report_and_metrics_matching_the_committed_run(tmp_path: Path) -> None:
    out = tmp_path / "reproduce"
    result = subprocess.run(
        ["make", "-s", "reproduce", "SEEDS=1", "QUICK=1", f"OUT={out}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Experiment 1, exact match" in result.stdout  # the table printed for a person

    metrics = json.loads((out / "metrics.json").read_text())
    (group,) = metrics["exp1_exact_match"]
    directions = {row["direction"]: row for row in group["rows"]}
    assert set(directions) == {"NameToDescription", "DescriptionToName"}
    for row in directions.values():
        for column in ("same", "reverse", "random_baseline"):
            assert 0.0 <= row[column]["mean"] <= 1.0
    likelihood = {test["split"] for entry in metrics["exp1_likelihood"] for test in entry["tests"]}
    assert {"p2d/reverse_test", "d2p/reverse_test"} <= likelihood
    assert metrics["provenance"]["machine"]["cpu_capability"]

    report = (out / "report.md").read_text()
    assert "Table 1" in report and "NameToDescription" in report and "DescriptionToName" in report

    (run_dir,) = metrics["run_dirs"]
    run_metrics = json.loads((Path(run_dir) / "eval" / "exp1_metrics.json").read_text())
    assert set(SPLITS) <= set(run_metrics["exact_match"])
    run_info = json.loads((Path(run_dir) / "run_info.json").read_text())
    assert run_metrics["dataset"]["content_hash"] == run_info["dataset"]["content_hash"]

    committed = files.read_json(COMMITTED_QUICK / "metrics.json")
    committed_run = files.read_json(COMMITTED_QUICK / "runs" / "exp1-seed0" / "eval" / "exp1_metrics.json")
    here, there = machine_info(), committed["provenance"]["machine"]
    same_machine = all(here[key] == there[key] for key in ("cpu", "cpu_capability", "torch_threads"))
    assert_same_numbers(numbers(run_metrics), numbers(committed_run), 0.0 if same_machine else OTHER_MACHINE_RTOL)

    # A rerun resumes: the trained and evaluated seed is kept, and the timeline adds the second invocation's steps.
    from reversal_hf.reproduce import main

    assert main(["--seeds", "1", "--quick", "--output", str(out)]) == 0
    steps = [json.loads(line) for line in (out / "timeline.jsonl").read_text().splitlines()]
    assert [step["step"] for step in steps] == ["exp1-seed0", "exp1-seed0"]
    assert steps[1]["seconds"] < steps[0]["seconds"]
    rerun = json.loads((out / "metrics.json").read_text())
    assert rerun["timeline"]["steps"] == 1 and rerun["exp1_exact_match"] == metrics["exp1_exact_match"]
    assert metrics["pending"] == rerun["pending"] == []

    # A plan with a second seed, stopped before it: the report of what finished, and the seed named as pending.
    assert main(["--seeds", "2", "--quick", "--output", str(out), "--report-only"]) == 0
    partial = json.loads((out / "metrics.json").read_text())
    assert partial["run_dirs"] == [run_dir] and partial["pending"] == [str(out / "runs" / "exp1-seed1")]
    assert len((out / "timeline.jsonl").read_text().splitlines()) == 2  # nothing ran
    # Reporting is not running: the machine and date stay the runs', the day of the report is added.
    kept = {key: rerun["provenance"][key] for key in ("date", "machine")}
    assert {key: partial["provenance"][key] for key in kept} == kept and partial["provenance"]["reported"]


def test_committed_quick_fixture_and_full_results_come_from_one_commit() -> None:
    quick = files.read_json(COMMITTED_QUICK / "metrics.json")["provenance"]
    full = files.read_json(REPO_ROOT / "results" / "tiny_exp1" / "metrics.json")["provenance"]
    assert quick["git_commit"] == full["git_commit"]
    assert quick["machine"]["torch_threads"] == 1  # the thread count the test suite runs with


def test_readme_results_tables_match_the_committed_metrics() -> None:
    """Every results block of README.md and of every docs/*.md page equals what its results folder renders."""
    from reversal_hf.reporting.readme import main, pages

    assert REPO_ROOT / "docs" / "results.md" in pages(REPO_ROOT)
    assert main(["--check"]) == 0


def test_readme_block_of_a_study_is_its_reports_first_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """A block is rewritten wherever it stands, in README.md or a docs page; `--check` names the page and block."""
    from reversal_hf.reporting.readme import main, pages, sync

    study = tmp_path / "results" / "study"
    study.mkdir(parents=True)
    (study / "report.md").write_text("# Study\n\nGenerated today by us.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n| c |\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:study -->\nold\n<!-- /results:study -->\nend\n")
    assert sync(readme, tmp_path / "results", check=True) == ["study"]
    assert sync(readme, tmp_path / "results", check=False) == ["study"]
    assert readme.read_text() == (
        "intro\n<!-- results:study -->\n_Generated today by us._\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
        "<!-- /results:study -->\nend\n"
    )
    assert sync(readme, tmp_path / "results", check=True) == []

    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "results.md"
    page.write_text("# Results\n\n<!-- results:study -->\nold\n<!-- /results:study -->\n")
    argv = ["--results", str(tmp_path / "results"), "--pages", *map(str, pages(tmp_path))]
    assert main([*argv, "--check"]) == 1
    assert capsys.readouterr().err == (
        "error: results blocks out of date with their metrics.json: results.md: study (run `reversal-hf readme`)\n"
    )
    assert main(argv) == 0 and "_Generated today by us._" in page.read_text()
    assert main([*argv, "--check"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "results blocks of 2 page(s) up to date"


def test_full_dry_run_prints_the_papers_plan_and_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """`--full --dry-run` for SmolLM2, with the paper's seeds by default: Exp 2, 3 Exp 1 seeds evaluated in context too,
    10 prompt-tuning seeds and their 10 random-initialised controls, Exp 3 both orders x 5 seeds for the recipe's fixed
    20 epochs (the longest, last) and the report; nothing is written."""
    out = tmp_path / "smollm2"
    assert main(["--full", "--model", "smollm2-135m", "--seeds", "3", "--output", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    runs = [line.split() for line in printed.splitlines() if line.startswith("train ")]
    prompt_tuning = "exp1_smollm2_135m_prompt_tuning"
    assert [(run[1], run[3], run[5]) for run in runs] == [
        *(("exp1_smollm2_135m", str(seed), str(out / "runs" / f"exp1-seed{seed}")) for seed in range(3)),
        *((prompt_tuning, str(seed), str(out / "runs" / f"exp1-prompt-tuning-seed{seed}")) for seed in range(10)),
        *(
            (prompt_tuning, str(seed), str(out / "runs" / f"exp1-prompt-tuning-random-init-seed{seed}"))
            for seed in range(10)
        ),
        *(
            ("exp3_smollm2_135m", str(seed), str(out / "runs" / f"exp3-{config}-seed{seed}"))
            for seed in range(5)
            for config in EXP3_CONFIGS
        ),
    ]
    overrides = [line for line in printed.splitlines() if line.strip().startswith("overrides: ")]
    assert ["--prompt_tuning_init random" in line for line in overrides] == [False] * 13 + [True] * 10 + [False] * 10
    evaluations = [line for line in printed.splitlines() if line.strip().startswith("evaluate: ")]
    assert ["'in_context': True" in line for line in evaluations] == [True] * 3 + [False] * 30
    assert f"--dataset_config {EXP3_CONFIGS[0]}" in printed and "--max_steps" not in printed
    assert f"evaluate exp2 on smollm2-135m -> {out / 'exp2'}" in printed
    assert f"evaluate exp1 in context on smollm2-135m -> {out / 'exp1-base-model'}" in printed  # App. B.6
    assert not out.exists()


def test_full_dry_run_takes_fewer_seeds(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--full", "--model", "smollm2-135m", "--seeds", "1", "--exp3-seeds", "2", "--prompt-tuning-seeds", "1"]
    assert main([*argv, "--dry-run"]) == 0
    names = [Path(line.split()[-1]).name for line in capsys.readouterr().out.splitlines() if line.startswith("train ")]
    assert names == [
        "exp1-seed0",
        "exp1-prompt-tuning-seed0",
        "exp1-prompt-tuning-random-init-seed0",
        *(f"exp3-{config}-seed{seed}" for seed in range(2) for config in EXP3_CONFIGS),
    ]
    assert main([*argv[:-1], "0", "--dry-run"]) == 1
    assert "--prompt-tuning-seeds must be at least 1" in capsys.readouterr().err


def test_quick_dry_run_is_exp1_alone_on_the_tiny_model(capsys: pytest.CaptureFixture[str]):
    assert main(["--quick", "--seeds", "1", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert [line.split()[1] for line in printed.splitlines() if line.startswith("train ")] == ["exp1_tiny"]
    assert "--max_steps 8" in printed and "'in_context': False" in printed and "exp2" not in printed


def test_an_evaluated_run_without_weights_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A committed run folder (run_info and metrics, no weights) resumes a study on another machine untrained."""
    from reversal_hf import launch, run_folder
    from reversal_hf.reproduce import train_once

    run_dir = tmp_path / "exp1-seed0"
    files.write_json(run_folder.run_info_path(run_dir), {"experiment": "exp1"})
    monkeypatch.setattr(launch, "main", lambda argv: pytest.fail(f"trained again: {argv}"))
    files.write_json(run_folder.metrics_path(run_dir, "exp1"), {"experiment": "exp1"})
    assert train_once("exp1_tiny", run_dir, 0, quick=True, extra=[]) == run_dir


def test_readme_block_of_a_full_study_shows_every_experiment_and_its_time_over_sessions(tmp_path: Path) -> None:
    from reversal_hf.reporting.readme import render_block

    study = tmp_path / "smollm2"
    accuracy = {"mean": 0.5, "sd": None, "n": 1, "per_run": {"exp3-question_to_answer": 0.5}}
    files.write_json(
        study / "metrics.json",
        {
            "provenance": {"command": "make reproduce-full", "date": "2026-11-27", "git_commit": ["abc", "def"]},
            "timeline": {"seconds": 5400.0, "steps": 4, "dates": ["2026-11-26", "2026-11-27"]},
            "pending": ["results/smollm2/runs/exp3-answer_to_question"],
            "exp1_exact_match": [],
            "exp1_likelihood": [],
            "exp3": [
                {
                    "group": "smollm2-135m",
                    "n_seeds": 1,
                    "rows": [{"split": "question_to_answer/test", "direction": "same", "accuracy": accuracy}],
                }
            ],
        },
    )
    block = render_block(study)
    assert "commit `abc`, `def`, 1.5 h in all (4 steps, run on 2026-11-26, 2026-11-27)" in block
    assert "**Not finished yet**: `exp3-answer_to_question`._" in block
    assert "**Experiment 3, exact match on the 100 test pairs (%)**" in block
    assert "| smollm2-135m | 1 | question_to_answer/test | same | 50.0 | > 80 |" in block
    assert "Experiment 2" not in block  # not in this study's metrics


def test_base_model_step_scores_exp1_in_context_and_the_report_shows_it_as_b6s_main_row(
    tmp_path: Path, tiny_model_dir: Path, exp1_dataset_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--full`'s first Exp 1 step evaluates the model that was not finetuned, as Appendix B.6 did; its folder is an
    `eval/` alone, which the report reads as the in-context table's main row."""
    from reversal_hf import reproduce, run_folder
    from reversal_hf.reporting import tables
    from reversal_hf.reporting.report import collect
    from reversal_hf.reporting.runs import load_runs

    monkeypatch.setattr(reproduce, "DATASETS_DIR", exp1_dataset_dir.parent)
    plan = reproduce.Plan("tiny-exp1", "exp1_tiny", "exp3_tiny", 1, True, tmp_path / "study", "exp1_prompt_tuning")
    folder = reproduce.run_exp1_base_model(plan, str(tiny_model_dir))
    assert folder == plan.base_model_dirs[1] and [p.name for p in folder.iterdir()] == ["eval"]
    metrics = run_folder.read_metrics(folder, "exp1")
    assert set(metrics["in_context"]) == {f"{s}/{o}" for s in ("p2d", "d2p") for o in ("same", "reverse")}
    assert reproduce.finished_steps(plan) == [folder]
    (row,) = collect(load_runs([folder]))["exp1_in_context"]
    assert row["role"] == tables.IN_CONTEXT_MAIN and row["training_mode"] == "not finetuned"
