"""The GPU readiness check (`bench/gpu_check.py`) in its CPU mode, so that it still runs the day a GPU is at hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import gpu_check
from reversal_hf.paths import REPO_ROOT


def test_packed_documents_fill_every_row_exactly():
    documents = gpu_check.packed_documents(rows=3, row_tokens=512, vocab_size=100)
    collator = gpu_check.PaddingFreeCollator(pad_token_id=0, max_row_tokens=512)
    batch = collator(documents)
    assert batch["input_ids"].shape == (3, 512)
    assert (batch["input_ids"] != 0).all(), "no padding: every token belongs to a document"
    assert all(1 <= len(d["input_ids"]) <= 512 for d in documents)


def test_logit_gaps_compare_the_saved_models(tiny_model_dir: Path):
    gaps = gpu_check.logit_gaps(dict.fromkeys(("init", "single", "zero3"), str(tiny_model_dir)))
    assert gaps == {"zero3_vs_single": 0.0, "single_vs_init": 0.0, "zero3_vs_init": 0.0}


def test_training_flops_count_attention_within_documents_only():
    config = type("Config", (), {"num_hidden_layers": 2, "hidden_size": 8})()
    one_long = gpu_check.training_flops(1000, config, [64])
    two_short = gpu_check.training_flops(1000, config, [32, 32])
    assert one_long - two_short == 6 * 2 * 8 * (64**2 - 2 * 32**2)
    assert gpu_check.bf16_peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert gpu_check.bf16_peak_flops("NVIDIA H100 PCIe") == pytest.approx(756e12)
    assert gpu_check.bf16_peak_flops("NVIDIA H200") == pytest.approx(989.4e12)
    assert gpu_check.bf16_peak_flops("Some Other Card") is None


@pytest.mark.slow
def test_cpu_mode_runs_all_four_parts(tmp_path: Path, exp1_dataset_dir: Path):
    command = [sys.executable, "-m", "bench.gpu_check", "--tiny", "--out", str(tmp_path), "--dataset"]
    result = subprocess.run(
        [*command, str(exp1_dataset_dir)],
        env=os.environ | {"OMP_NUM_THREADS": "1"},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [report_path] = tmp_path.glob("cpu-*.json")
    report = json.loads(report_path.read_text())
    parts = report["parts"]
    assert not [name for name, part in parts.items() if "error" in part or "skipped" in part]
    assert report["mode"] == "tiny" and report["versions"]["trl"]
    ours, trl_default = parts["paper_batch"]["results"]["ours"], parts["paper_batch"]["results"]["trl_default"]
    assert ours["tokens_per_s"] > 0 and trl_default["tokens_per_s"] > 0
    assert ours["first_loss"] == pytest.approx(trl_default["first_loss"], abs=1e-3), "packing changed the loss"
    assert parts["packed"]["isolation_max_logit_difference"] <= 1e-4
    assert parts["packed"]["eager"]["tokens_per_s"] > 0 and parts["packed"]["eager"]["mfu"] is None
    runs = parts["launcher"]["runs"]
    assert runs["single"]["zero3"] is None
    assert runs["zero3"]["zero3"]["local_numel"] == runs["zero3"]["zero3"]["total_numel"], "one rank holds all"
    assert parts["evaluation"]["rows"] > 0 and parts["evaluation"]["speedup"] > 0
    assert parts["evaluation"]["exact_match_identical"], "on CPU batched and per-example generations agree"
    table = report_path.with_suffix(".md").read_text()
    assert table.count("\n| ") == 5 and "error" not in table
