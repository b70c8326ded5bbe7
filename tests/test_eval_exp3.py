"""Experiment 3 evaluation: exact match on the held-out questions, per config, from the CLI and from a run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from reversal_hf import evaluation
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.exp3 import CONFIGS, configs_to_evaluate

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_exp3_cli_scores_both_configs(tiny_model_dir: Path, exp3_dataset_dir: Path, tmp_path: Path) -> None:
    argv = ["exp3", "--model", str(tiny_model_dir), "--dataset", str(exp3_dataset_dir), "--output", str(tmp_path)]
    assert evaluation.main([*argv, "--max-examples-per-split", "3", "--batch-size", "2"]) == 0
    metrics = json.loads((tmp_path / "eval" / "exp3_metrics.json").read_text())
    assert metrics["experiment"] == "exp3" and metrics["run_dir"] is None
    assert set(metrics["exact_match"]) == {f"{config}/test" for config in CONFIGS}
    table = pd.read_parquet(tmp_path / "eval" / "exp3_examples.parquet")
    for key, result in metrics["exact_match"].items():
        rows = table[table["split"] == key]
        assert result["n"] == len(rows) == 3
        assert result["accuracy"] == pytest.approx(rows["exact_match"].mean())
        # asked inside the wrapper the realized training examples use, as the paper's own test prompts are
        assert all(prompt.startswith("<BEGIN GUIDANCE TEST>\n\nQ: ") for prompt in rows["prompt"])
        assert all(prompt.endswith(" A:") for prompt in rows["prompt"])
        assert rows["generation"].map(len).gt(0).all()


def test_eval_run_uses_the_trained_config(tiny_model_dir: Path, exp3_dataset_dir: Path, tmp_path: Path) -> None:
    run_dir = shutil.copytree(tiny_model_dir, tmp_path / "exp3_run")
    info = {"experiment": "exp3", "dataset": {"name": str(exp3_dataset_dir), "config": "answer_to_question"}}
    (run_dir / "run_info.json").write_text(json.dumps(info))
    assert evaluation.main(["run", str(run_dir), "--max-examples-per-split", "2"]) == 0
    metrics = json.loads((run_dir / "eval" / "exp3_metrics.json").read_text())
    assert metrics["run_dir"] == str(run_dir)
    assert metrics["exact_match"].keys() == {"answer_to_question/test"}
    assert metrics["exact_match"]["answer_to_question/test"]["n"] == 2


def test_configs_to_evaluate() -> None:
    assert configs_to_evaluate(None, None) == list(CONFIGS)
    assert configs_to_evaluate({"dataset": {"config": "question_to_answer"}}, None) == ["question_to_answer"]
    assert configs_to_evaluate({"dataset": {"config": "question_to_answer"}}, ["answer_to_question"]) == [
        "answer_to_question"
    ]
    with pytest.raises(EvaluationError, match="'p2d' is not an Experiment 3 config"):
        configs_to_evaluate(None, ["p2d"])


def test_unknown_experiment_in_run_info_is_an_error(tmp_path: Path, capsys) -> None:
    (tmp_path / "run_info.json").write_text(json.dumps({"experiment": "exp9", "dataset": {"name": "x"}}))
    assert evaluation.main(["run", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip().endswith("experiment 'exp9' is not exp1 or exp3")
