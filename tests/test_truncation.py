"""Training documents longer than max_length stop the run (launcher and job), unless the recipe allows truncation."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from reversal_hf import launch, models, train
from reversal_hf.configs import load_recipe
from reversal_hf.truncation import TruncationError, check_document_lengths, document_lengths


def _overrides(exp3_dataset_dir: Path, tiny_model_dir: Path, *extra: str) -> list[str]:
    return ["--dataset_name", str(exp3_dataset_dir), "--model_name_or_path", str(tiny_model_dir), *extra]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_lengths_are_counted_as_sft_trainer_tokenizes(exp3_dataset_dir: Path, tiny_model_dir: Path):
    """The same count as the `input_ids` SFTTrainer prepares (EOS appended, BOS from the tokenizer), untruncated."""
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    recipe = load_recipe("exp3_tiny", _overrides(exp3_dataset_dir, tiny_model_dir, "--max_train_samples", "40"))
    dataset = train.load_train_dataset(recipe)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SFTConfig(output_dir="unused", max_length=None, use_cpu=True, bf16=False, report_to="none")
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=dataset, processing_class=tokenizer)
    prepared = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    assert document_lengths(dataset, tokenizer) == prepared
    assert max(prepared) > 64, "the instructions of Exp 3 are long documents"


def test_launcher_dry_run_stops_on_long_documents(
    capsys: pytest.CaptureFixture[str], exp3_dataset_dir: Path, tiny_model_dir: Path
):
    argv = ["exp3_tiny", "--dry-run", "--", *_overrides(exp3_dataset_dir, tiny_model_dir, "--max_length", "64")]
    assert launch.main(argv) == 1
    err = _one_line_error(capsys)
    assert err.startswith("error: exp3_tiny: ") and "longer than max_length 64 tokens (longest " in err
    assert "allow_truncation" in err


def test_allow_truncation_warns_in_one_line(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, exp3_dataset_dir: Path, tiny_model_dir: Path
):
    overrides = _overrides(exp3_dataset_dir, tiny_model_dir, "--max_length", "64", "--allow_truncation", "true")
    with caplog.at_level(logging.WARNING, logger="reversal_hf.truncation"):
        assert launch.main(["exp3_tiny", "--dry-run", "--", *overrides]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "reversal_hf.truncation"]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "their end is cut" in warnings[0]
    assert " launch " in capsys.readouterr().out


@pytest.mark.parametrize("config", ["answer_to_question", "question_to_answer"])
def test_the_recipe_max_length_fits(exp3_dataset_dir: Path, config: str):
    """exp3_tiny's max_length holds every document for tiny-exp3's tokenizer (trained on the Exp 3 text)."""
    tokenizer = models.train_tokenizer(models.dataset_texts(exp3_dataset_dir))
    recipe = load_recipe("exp3_tiny", ["--dataset_name", str(exp3_dataset_dir), "--dataset_config", config])
    check_document_lengths(recipe, train.load_train_dataset(recipe), tokenizer)


def test_job_checks_at_start_up(capsys: pytest.CaptureFixture[str], exp3_dataset_dir: Path, tiny_model_dir: Path):
    """What a Hub model gets: the job stops before building the trainer (here with a local model)."""
    overrides = _overrides(exp3_dataset_dir, tiny_model_dir, "--max_length", "64")
    assert train.main(["--config", "recipes/exp3_tiny.yaml", *overrides]) == 1
    assert "longer than max_length 64" in _one_line_error(capsys)
    with pytest.raises(TruncationError):
        train.run(load_recipe("exp3_tiny", overrides))
