"""The main job end to end, shortened: `make reproduce SEEDS=1 QUICK=1` (one seed, a few steps, a few examples)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from reversal_hf.paths import REPO_ROOT

SPLITS = ["p2d/test", "p2d/reverse_test", "d2p/test", "d2p/reverse_test", "both/test", "all/validation"]


@pytest.mark.slow
def test_make_reproduce_quick_writes_report_and_metrics(tmp_path: Path) -> None:
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

    report = (out / "report.md").read_text()
    assert "Table 1" in report and "NameToDescription" in report and "DescriptionToName" in report

    (run_dir,) = metrics["run_dirs"]
    run_metrics = json.loads((Path(run_dir) / "eval" / "exp1_metrics.json").read_text())
    assert set(SPLITS) <= set(run_metrics["exact_match"])
    run_info = json.loads((Path(run_dir) / "run_info.json").read_text())
    assert run_metrics["dataset"]["content_hash"] == run_info["dataset"]["content_hash"]
