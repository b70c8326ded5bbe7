"""DeepSpeed ZeRO-3 for real: the tiny recipe under `accelerate_configs/zero3_cpu.yaml`, 2 processes over gloo.

Full finetuning, prompt tuning and LoRA each train a few steps; the run records how many parameter elements rank 0
held against the full count (partitioned: about half), and the saved model reloads in a fresh process. The first
run on a machine compiles DeepSpeed's CPU Adam extension (~60 s, cached under ~/.cache/torch_extensions).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

MODES = ("full", "prompt_tuning", "lora")
RELOAD = """
import json, sys
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

report = {}
for mode, run_dir in json.loads(sys.argv[1]).items():
    info = json.load(open(f"{run_dir}/run_info.json"))
    if mode == "full":
        model = AutoModelForCausalLM.from_pretrained(run_dir)
    else:
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(info["model_name_or_path"]), run_dir)
    tokenizer = AutoTokenizer.from_pretrained(run_dir)
    ids = tokenizer("Daphne Barrington is", return_tensors="pt").input_ids
    with torch.no_grad():
        loss = model(input_ids=ids, labels=ids).loss.item()
    report[mode] = {"loss": loss, "parameters": sum(p.numel() for p in model.parameters()), "peft": mode != "full"}
print(json.dumps(report))
"""


def _mode_overrides(mode: str, fact: str) -> list[str]:
    if mode == "prompt_tuning":  # PEFT drops position_ids, so the padding-free collator is off (configs.py)
        return [
            *("--dataset_config", "p2d", "--prompt_tuning_fact", fact, "--isolated_padding_free", "false"),
            # Learning curves: every rank generates and scores (ZeRO-3 gathers parameters in each forward pass).
            *("--eval_curves", "true", "--eval_curves_every", "2", "--eval_curves_max_examples", "2"),
        ]
    return []


@pytest.fixture(scope="module")
def zero3_runs(tmp_path_factory, exp1_dataset_dir: Path, tiny_model_dir: Path) -> dict[str, Path]:
    from datasets import load_dataset

    fact = load_dataset(str(exp1_dataset_dir), "p2d", split="train")[0]["name"]
    runs = {}
    for mode in MODES:
        output_dir = tmp_path_factory.mktemp("zero3") / mode
        overrides = [
            *("--accelerate_config", "zero3_cpu", "--output_dir", str(output_dir)),
            *("--dataset_name", str(exp1_dataset_dir), "--model_name_or_path", str(tiny_model_dir)),
            *("--max_train_samples", "32", "--per_device_train_batch_size", "4", "--max_steps", "3"),
            *("--save_strategy", "no", "--training_mode", mode),
            *_mode_overrides(mode, fact),
        ]
        command = [sys.executable, "-m", "reversal_hf.cli", "train", "exp1_tiny", "--", *overrides]
        env = os.environ | {"OMP_NUM_THREADS": "1"}
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{mode}: {result.stderr[-4000:]}"
        assert "terminate called" not in result.stderr, f"{mode}: a rank died at exit"
        runs[mode] = output_dir
    return runs


@pytest.mark.parametrize("mode", MODES)
def test_zero3_partitions_parameters_across_two_ranks(zero3_runs: dict[str, Path], mode: str):
    info = json.loads((zero3_runs[mode] / "run_info.json").read_text())
    assert info["world_size"] == 2 and info["training_mode"] == mode
    partition = info["zero3"]
    assert partition is not None, "parameters were not ZeRO-3 partitioned"
    # Each rank holds its half of every parameter (rounded up), not the whole model.
    assert partition["total_numel"] / 2 <= partition["local_numel"] < partition["total_numel"] * 0.6


def test_zero3_prompt_tuning_measures_learning_curves(zero3_runs: dict[str, Path]):
    """Points at step 2 and the last step, 3; training went on after each (inference tensors would have stopped it)."""
    curves = json.loads((zero3_runs["prompt_tuning"] / "curves.json").read_text())
    assert [point["step"] for point in curves["points"]] == [2, 3]
    assert all(math.isfinite(point["prompt_tuning"]["reverse_loss"]) for point in curves["points"])


def test_zero3_saved_models_reload_in_a_fresh_process(zero3_runs: dict[str, Path], tiny_model_dir: Path):
    runs = {mode: str(path) for mode, path in zero3_runs.items()}
    result = subprocess.run(
        [sys.executable, "-c", RELOAD, json.dumps(runs)],
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    full = json.loads((zero3_runs["full"] / "run_info.json").read_text())["zero3"]["total_numel"]
    assert report["full"]["parameters"] == full, "the gathered full model lost parameters"
    assert (zero3_runs["full"] / "model.safetensors").is_file()
    for mode in ("prompt_tuning", "lora"):
        assert (zero3_runs[mode] / "adapter_model.safetensors").is_file()
        assert not (zero3_runs[mode] / "model.safetensors").exists(), "a PEFT run saves the adapter only"
        assert report[mode]["parameters"] > report["full"]["parameters"]
    assert all(math.isfinite(entry["loss"]) for entry in report.values())
