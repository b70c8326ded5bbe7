"""Learning curves (`eval_curves`): the callback through the real trainer on the tiny model, a prompt-tuning run
measured every epoch and an Exp 3 run every 3 steps; each point reaches the log history and curves.json, and the last
one equals what `reversal-hf eval run` measures on the saved model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reversal_hf.evaluation.curves import EXP1_SPLITS, LOG_PREFIX, points_from_log_history
from reversal_hf.evaluation.run import RunArguments, evaluate_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Trains a recipe with overrides and dumps the trainer's log history, as rank 0 holds it at the end, to argv[1].
TRAIN_AND_DUMP_LOG_HISTORY = """
import json, sys
from transformers import TrainerCallback
from reversal_hf.configs import load_recipe
from reversal_hf.train import run

class DumpLogHistory(TrainerCallback):
    def on_train_end(self, args, state, control, **kwargs):
        json.dump(state.log_history, open(sys.argv[1], "w"))

run(load_recipe(sys.argv[2], sys.argv[3:]), callbacks=[DumpLogHistory()])
"""
LOSSES = ("same_order_loss", "reverse_loss", "shuffled_reverse_loss")
TUNED_FACT_SPLITS = [split for split in EXP1_SPLITS if split.startswith("p2d/")]
EVAL_BATCH_SIZE = 8


def _train(tmp_path: Path, recipe: str, overrides: list[str]) -> tuple[Path, list[dict]]:
    output_dir, log_path = tmp_path / recipe, tmp_path / f"{recipe}_log_history.json"
    command = [sys.executable, "-c", TRAIN_AND_DUMP_LOG_HISTORY, str(log_path), recipe, "--output_dir", str(output_dir)]
    env = os.environ | {"OMP_NUM_THREADS": "1"}
    result = subprocess.run([*command, *overrides], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, json.loads(log_path.read_text())


def _common(dataset: Path, model: Path) -> list[str]:
    return [
        *("--dataset_name", str(dataset), "--model_name_or_path", str(model), "--eval_curves", "true"),
        *("--per_device_eval_batch_size", str(EVAL_BATCH_SIZE), "--save_strategy", "no", "--logging_steps", "1"),
    ]


def _check_log_history(log_history: list[dict], curves: dict) -> None:
    """Curve points are log entries of their own (no training metric folded in), the same as curves.json's."""
    entries = [entry for entry in log_history if any(key.startswith(LOG_PREFIX) for key in entry)]
    assert len(entries) == len(curves["points"]) and points_from_log_history(log_history) == curves["points"]
    assert not any({"loss", "entropy", "num_tokens"} & set(entry) for entry in entries)
    training = [entry for entry in log_history if "loss" in entry]
    assert len(training) == curves["points"][-1]["step"], "a training log entry went missing"


@pytest.fixture(scope="module")
def prompt_tuning_run(tmp_path_factory, exp1_dataset_dir: Path, tiny_model_dir: Path) -> tuple[Path, list[dict]]:
    """Prompt tuning on one fact's 30 documents, 2 epochs of 2 steps, a curve point after each epoch."""
    return _train(
        tmp_path_factory.mktemp("curves"),
        "exp1_tiny",
        [
            *_common(exp1_dataset_dir, tiny_model_dir),
            *("--dataset_config", "p2d", "--training_mode", "prompt_tuning", "--isolated_padding_free", "false"),
            *("--prompt_tuning_fact", "Daphne Barrington", "--num_train_epochs", "2"),
            *("--per_device_train_batch_size", "16", "--eval_curves_max_examples", "4"),
        ],
    )


def test_prompt_tuning_curves_every_epoch(prompt_tuning_run: tuple[Path, list[dict]]):
    run_dir, log_history = prompt_tuning_run
    curves = json.loads((run_dir / "curves.json").read_text())
    assert (curves["experiment"], curves["training_mode"], curves["every"]) == ("exp1", "prompt_tuning", "epoch")
    # the tuned fact's rows only: a p2d fact (Appendix B.8's soft prompt says nothing about other facts)
    assert curves["n"] == dict.fromkeys(TUNED_FACT_SPLITS, 4) and curves["prompt_tuning_fact"] == "Daphne Barrington"
    assert [(point["step"], point["epoch"]) for point in curves["points"]] == [(2, 1.0), (4, 2.0)]
    for point in curves["points"]:
        assert set(point["exact_match"]) == set(TUNED_FACT_SPLITS) and set(point["prompt_tuning"]) == set(LOSSES)
        assert all(0 < point["prompt_tuning"][loss] < 20 for loss in LOSSES) and point["runtime_s"] > 0
    first, last = (point["prompt_tuning"]["same_order_loss"] for point in curves["points"])
    assert first != last, "the soft prompt did not change between epochs"
    _check_log_history(log_history, curves)

    metrics = evaluate_run(run_dir, RunArguments(max_examples_per_split=4, batch_size=EVAL_BATCH_SIZE))
    final = curves["points"][-1]
    assert final["exact_match"] == {split: metrics["exact_match"][split]["accuracy"] for split in TUNED_FACT_SPLITS}
    assert final["prompt_tuning"] == pytest.approx({loss: metrics["prompt_tuning"][loss] for loss in LOSSES}, abs=1e-4)


def test_exp3_curves_every_n_steps_and_at_the_last(tmp_path: Path, exp3_dataset_dir: Path, tiny_model_dir: Path):
    """32 documents in batches of 8 for 2 epochs (8 steps), a point every 3 steps: steps 3, 6 and the last, 8."""
    run_dir, log_history = _train(
        tmp_path,
        "exp3_tiny",
        [
            *_common(exp3_dataset_dir, tiny_model_dir),
            *("--max_train_samples", "32", "--per_device_train_batch_size", "8", "--num_train_epochs", "2"),
            *("--eval_curves_every", "3", "--eval_curves_max_examples", "5"),
        ],
    )
    curves = json.loads((run_dir / "curves.json").read_text())
    assert curves["every"] == "3" and curves["n"] == {"answer_to_question/test": 5}
    assert [point["step"] for point in curves["points"]] == [3, 6, 8]
    _check_log_history(log_history, curves)
    metrics = evaluate_run(run_dir, RunArguments(max_examples_per_split=5, batch_size=EVAL_BATCH_SIZE))
    assert curves["points"][-1]["exact_match"] == {
        "answer_to_question/test": metrics["exact_match"]["answer_to_question/test"]["accuracy"]
    }


def test_exp3_stops_once_the_realized_examples_are_learned(
    tmp_path: Path, exp3_dataset_dir: Path, tiny_model_dir: Path
):
    """A threshold of 0.0 is reached by the first point (step 3 of 8): training stops there, and the point says so."""
    run_dir, log_history = _train(
        tmp_path,
        "exp3_tiny",
        [
            *_common(exp3_dataset_dir, tiny_model_dir),
            *("--max_train_samples", "32", "--per_device_train_batch_size", "8", "--num_train_epochs", "2"),
            *("--eval_curves_every", "3", "--eval_curves_max_examples", "5", "--eval_curves_stop_at_realized", "0.0"),
        ],
    )
    curves = json.loads((run_dir / "curves.json").read_text())
    assert curves["stop_at"] == {"split": "answer_to_question/realized", "accuracy": 0.0}
    assert curves["n"] == {"answer_to_question/test": 5, "answer_to_question/realized": 5}
    [point] = curves["points"]
    assert point["step"] == 3 and point["stopped_training"] == 1.0
    assert set(point["exact_match"]) == {"answer_to_question/test", "answer_to_question/realized"}
    assert max(entry["step"] for entry in log_history) == 3
    _check_log_history(log_history, curves)
    run_info = json.loads((run_dir / "run_info.json").read_text())
    assert run_info["train_steps"] == 3 and run_info["train_epochs"] < 2
