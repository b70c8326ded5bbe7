"""Training the tiny recipe for a few steps: the run folder contract, resuming after a kill, and pushing with a card.

Runs go through subprocesses (`reversal-hf train`, exactly what `make train` runs) with one torch thread each: the
CI machine's cores are shared, and oversubscribed threads make a 4M-parameter step ~20x slower.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from reversal_hf.configs import RecipeError, gradient_accumulation_steps
from reversal_hf.model_card import build_model_card
from reversal_hf.train import last_complete_checkpoint

RUN_INFO_KEYS = {
    "recipe",
    "run_id",
    "experiment",
    "training_mode",
    "model_name_or_path",
    "dataset",
    "seed",
    "git_commit",
    "resolved_config",
    "train_runtime_s",
    "train_loss",
    "precision",
}
KILL_AFTER_SAVE = """
import os, signal, sys
from transformers import TrainerCallback
from reversal_hf.configs import load_recipe
from reversal_hf.train import run

class KillAfterSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        if state.global_step == int(sys.argv[1]):
            os.kill(os.getpid(), signal.SIGKILL)

run(load_recipe(sys.argv[2], sys.argv[3:]), callbacks=[KillAfterSave()])
"""
ENV = os.environ | {"OMP_NUM_THREADS": "1"}


def _overrides(dataset: Path, model: Path, output_dir: Path) -> list[str]:
    return [
        *("--dataset_name", str(dataset), "--model_name_or_path", str(model), "--output_dir", str(output_dir)),
        *("--max_train_samples", "48", "--per_device_train_batch_size", "8", "--max_steps", "6"),
        *("--save_strategy", "steps", "--save_steps", "2", "--logging_steps", "5"),
    ]


def _train(overrides: list[str], env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "reversal_hf.cli", "train", "exp1_tiny", "--", *overrides]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory, exp1_dataset_dir: Path, tiny_model_dir: Path) -> Path:
    output_dir = tmp_path_factory.mktemp("runs") / "uninterrupted"
    _train(_overrides(exp1_dataset_dir, tiny_model_dir, output_dir))
    return output_dir


def test_tiny_run_writes_the_run_folder(uninterrupted_run: Path, exp1_dataset_dir: Path, tiny_model_dir: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((uninterrupted_run / "run_info.json").read_text())
    assert set(info) >= RUN_INFO_KEYS
    assert (info["recipe"], info["experiment"], info["training_mode"]) == ("exp1_tiny", "exp1", "full")
    build_info = json.loads((exp1_dataset_dir / "build_info.json").read_text())
    assert info["dataset"] == {
        "name": str(exp1_dataset_dir),
        "config": "all",
        "revision": None,
        "content_hash": build_info["content_hash"],
    }
    assert info["model_name_or_path"] == str(tiny_model_dir) and info["resolved_config"]["max_steps"] == 6
    assert len(info["git_commit"]) == 40 and math.isfinite(info["train_loss"]) and info["resumed_from"] is None
    assert info["precision"]["dtype"] == "fp32" and info["precision"]["cpu_capability"]  # exp1_tiny sets bf16: false
    assert not list(uninterrupted_run.glob("checkpoint-*")), "a finished run keeps no checkpoints"
    model = AutoModelForCausalLM.from_pretrained(uninterrupted_run)
    AutoTokenizer.from_pretrained(uninterrupted_run)
    before = load_file(tiny_model_dir / "model.safetensors")
    after = model.state_dict()
    assert any(not after[name].equal(tensor) for name, tensor in before.items()), "training changed no weight"


def test_killed_run_resumes_to_the_same_weights(
    uninterrupted_run: Path, exp1_dataset_dir: Path, tiny_model_dir: Path, hub_server, tmp_path: Path
):
    """Killed (SIGKILL) right after checkpoint-4, rerun with the same command: the weights equal the uninterrupted
    run's, and so does `train_loss`, the whole run's mean (steps 1-4 come from the checkpoint's log history, logged
    at each save although `logging_steps` is 5). The rerun also pushes (`--push_to_hub`) to the test Hub, which
    checks the model card on the way; pushing is no change of recipe."""
    output_dir = tmp_path / "killed"
    overrides = _overrides(exp1_dataset_dir, tiny_model_dir, output_dir)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SAVE, "4", "exp1_tiny", *overrides], env=ENV, capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert last_complete_checkpoint(output_dir).name == "checkpoint-4"
    assert not (output_dir / "run_info.json").exists()

    repo_id = "reversal-tester/exp1-tiny-resumed"
    push = ["--push_to_hub", "--hub_model_id", repo_id]
    _train([*overrides, *push], env=ENV | hub_server.client_env(str(tmp_path / "home")))
    info = json.loads((output_dir / "run_info.json").read_text())
    assert info["resumed_from"] == "checkpoint-4"
    uninterrupted_info = json.loads((uninterrupted_run / "run_info.json").read_text())
    assert info["train_loss"] == pytest.approx(uninterrupted_info["train_loss"], rel=1e-6)
    assert info["run_id"] != uninterrupted_info["run_id"] and not (output_dir / "run_start.json").exists()
    resumed = load_file(output_dir / "model.safetensors")
    reference = load_file(uninterrupted_run / "model.safetensors")
    assert resumed.keys() == reference.keys()
    assert all(resumed[name].equal(reference[name]) for name in reference), "resumed weights differ"

    pushed = hub_server.files(repo_id, repo_type="model")
    assert {"model.safetensors", "config.json", "run_info.json", "README.md"} <= set(pushed)
    assert not any(path.startswith("checkpoint-") for path in pushed)
    card = pushed["README.md"].decode()
    metadata = yaml.safe_load(card.split("---")[1])
    assert "reversal-curse" in metadata["tags"] and "exp1_tiny" in card and info["dataset"]["content_hash"] in card
    assert "HF_TOKEN" not in card and hub_server.token not in card


def test_model_card_carries_eval_results_as_model_index(tmp_path: Path):
    run_info = {
        "recipe": "exp1_llama7b",
        "experiment": "exp1",
        "training_mode": "full",
        "model_name_or_path": "huggyllama/llama-7b",
        "dataset": {"name": "someone/reversal-exp1", "config": "all", "revision": "v1.0.0", "content_hash": "abc"},
        "seed": 42,
        "git_commit": "0" * 40,
        "train_loss": 1.5,
    }
    (tmp_path / "run_info.json").write_text(json.dumps(run_info))
    (tmp_path / "eval").mkdir()
    metrics = {"experiment": "exp1", "exact_match": {"p2d/test": {"accuracy": 0.5, "n": 300}}}
    (tmp_path / "eval" / "exp1_metrics.json").write_text(json.dumps(metrics))
    card = build_model_card(tmp_path)
    assert card.data.base_model == "huggyllama/llama-7b" and card.data.datasets == ["someone/reversal-exp1"]
    (result,) = card.data.eval_results
    assert (result.dataset_config, result.dataset_split, result.metric_value) == ("p2d", "test", 0.5)
    assert result.dataset_revision == "v1.0.0" and "exp1_llama7b" in card.text and "v1.0.0" in card.text


def test_last_complete_checkpoint_skips_one_killed_while_saving(tmp_path: Path):
    for step, complete in ((2, True), (10, True), (12, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert last_complete_checkpoint(tmp_path).name == "checkpoint-10"
    assert last_complete_checkpoint(tmp_path / "absent") is None


def test_total_batch_size_sets_gradient_accumulation():
    assert gradient_accumulation_steps(128, 1, 8) == 16
    with pytest.raises(RecipeError, match="total_batch_size"):
        gradient_accumulation_steps(1, 1, 8)
