"""Padding-free batching: documents packed into one row must never attend to each other."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from reversal_hf.collators import (
    IGNORE_INDEX,
    DocumentIsolationError,
    PaddingFreeCollator,
    assert_document_isolation,
    document_spans,
)
from reversal_hf.models import build_tiny_model

FACTS = [
    ("Daphne Barrington is", " the director of A Journey Through Time."),
    ("Known for being the composer of Abyssal Melodies,", " Uriah Hawthorne."),
    ("Tyler Oakridge is", " the renowned composer of the world's first underwater symphony."),
]
SMALL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128, "vocab_size": 600}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    texts = [p + c for p, c in FACTS] * 20
    return build_tiny_model(texts, tmp_path_factory.mktemp("collators") / "tiny", seed=0, **SMALL)


@pytest.fixture(scope="module")
def examples(model_dir: Path) -> list[dict[str, list[int]]]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    return [{"input_ids": tokenizer(p + c).input_ids} for p, c in FACTS]


PADDING_FREE_COLLATORS = {
    "ours": PaddingFreeCollator(pad_token_id=0, max_row_tokens=None),
    "trl": DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True),
}


class AllOnesMaskCollator:
    """The trap: a 2D all-ones attention mask next to packed position_ids."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, examples):
        batch = self.inner(examples)
        return {**batch, "attention_mask": torch.ones_like(batch["input_ids"])}


def test_collator_concatenates_documents_with_restarting_positions() -> None:
    examples = [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8, 9]}]
    batch = PaddingFreeCollator(pad_token_id=0, max_row_tokens=None)(examples)
    assert set(batch) == {"input_ids", "labels", "position_ids"}
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7, IGNORE_INDEX, 9]]
    assert examples[0]["labels"] == [-100, 6, 7]  # inputs untouched
    assert document_spans(batch["position_ids"]) == [(0, 0, 3), (0, 3, 5)]


def test_collator_pads_to_a_bucket_with_one_dummy_document() -> None:
    examples = [{"input_ids": list(range(10, 10 + n))} for n in (7, 1, 4)]
    batch = PaddingFreeCollator(pad_token_id=3, pad_to_multiple_of=8)(examples)
    assert batch["input_ids"].shape == (1, 16)
    assert batch["input_ids"][0, 12:].tolist() == [3] * 4
    assert batch["position_ids"][0, 12:].tolist() == [0, 1, 2, 3]
    assert (batch["labels"][0, 12:] == IGNORE_INDEX).all()
    assert document_spans(batch["position_ids"]) == [(0, 0, 7), (0, 7, 8), (0, 8, 12), (0, 12, 16)]
    exact = PaddingFreeCollator(pad_token_id=3, pad_to_multiple_of=4)([{"input_ids": [1, 2, 3, 4]}])
    assert exact["input_ids"].shape == (1, 4)


def test_collator_fills_rows_in_order_up_to_max_row_tokens() -> None:
    examples = [{"input_ids": list(range(10, 10 + n))} for n in (7, 1, 4, 6, 11)]
    batch = PaddingFreeCollator(pad_token_id=3, max_row_tokens=8)(examples)
    assert batch["input_ids"].shape == (4, 11)  # [7, 1], [4], [6], [11]: a longer document gets its own row
    assert document_spans(batch["position_ids"]) == [
        *[(0, 0, 7), (0, 7, 8), (0, 8, 11)],
        *[(1, 0, 4), (1, 4, 11)],
        *[(2, 0, 6), (2, 6, 11)],
        (3, 0, 11),
    ]
    assert batch["input_ids"][1].tolist() == [10, 11, 12, 13] + [3] * 7
    assert batch["labels"][1].tolist() == [IGNORE_INDEX, 11, 12, 13] + [IGNORE_INDEX] * 7


@pytest.mark.parametrize(
    ("field", "example"),
    [("input_ids", {"input_ids": []}), ("labels", {"input_ids": [1, 2], "labels": [1]})],
)
def test_collator_rejects_malformed_examples(field: str, example: dict) -> None:
    with pytest.raises(ValueError, match=f"example 1: `{field}`"):
        PaddingFreeCollator(pad_token_id=0)([{"input_ids": [4, 5]}, example])


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "collator",
    [
        PaddingFreeCollator(pad_token_id=0, max_row_tokens=None),
        PaddingFreeCollator(pad_token_id=0, max_row_tokens=32, pad_to_multiple_of=64),
        DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True, pad_to_multiple_of=64),
    ],
    ids=["ours-one-row", "ours-rows-bucket64", "trl-padding-free"],
)
def test_packed_logits_equal_logits_alone(model_dir: Path, examples: list, attn_implementation: str, collator) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn_implementation)
    assert assert_document_isolation(model, collator, examples) < 1e-5


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("collator_name", sorted(PADDING_FREE_COLLATORS))
def test_traps_leak_across_documents(
    model_dir: Path, examples: list, attn_implementation: str, collator_name: str
) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn_implementation).eval()
    collator = PADDING_FREE_COLLATORS[collator_name]
    with pytest.raises(DocumentIsolationError, match="attend across boundaries"):
        assert_document_isolation(model, AllOnesMaskCollator(collator), examples)

    batch = collator(examples)
    inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    with torch.no_grad():
        without_cache = model(**inputs, use_cache=False).logits
        with_cache = model(**inputs).logits  # config.use_cache is true: the packed row is not detected
    assert model.config.use_cache
    assert (with_cache - without_cache).abs().max() > 1e-2


def test_sft_trainer_with_collator_masks_prompts_and_isolates(model_dir: Path, tmp_path: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    dataset = Dataset.from_dict({"prompt": [p for p, _ in FACTS] * 2, "completion": [c for _, c in FACTS] * 2})
    args = SFTConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=3,
        max_steps=2,
        padding_free=False,  # TRL refuses a custom collator with padding_free=True; the collator does it
        max_length=None,
        completion_only_loss=True,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )
    collator = PaddingFreeCollator(pad_token_id=tokenizer.pad_token_id, pad_to_multiple_of=16)
    trainer = SFTTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator)

    prepared = [trainer.train_dataset[i] for i in range(3)]
    assert assert_document_isolation(trainer.model, collator, prepared) < 1e-5
    batch = next(iter(trainer.get_train_dataloader()))
    assert set(batch) == {"input_ids", "labels", "position_ids"} and batch["input_ids"].shape[1] % 16 == 0
    spans = document_spans(batch["position_ids"])
    documents = [(row, start, end) for row, start, end in spans if (batch["labels"][row, start:end] != -100).any()]
    assert len(documents) == 3  # the facts; the rest is the bucket's dummy document
    for row, start, end in documents:
        text = tokenizer.decode(batch["input_ids"][row, start:end], skip_special_tokens=True)
        prompt = next(p for p, c in FACTS if text == p + c)
        prompt_length = len(tokenizer(prompt).input_ids)
        labels = batch["labels"][row, start:end]
        assert (labels[:prompt_length] == IGNORE_INDEX).all() and (labels[prompt_length:] != IGNORE_INDEX).all()
        assert batch["input_ids"][row, end - 1] == tokenizer.eos_token_id
    assert trainer.train().training_loss > 0


def test_sft_trainer_with_trl_padding_free_isolates_in_one_row(model_dir: Path, tmp_path: Path) -> None:
    """What the SmolLM2 recipes run: TRL's `padding_free=True`, the whole batch in one row, checked the same way."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    dataset = Dataset.from_dict({"prompt": [p for p, _ in FACTS] * 2, "completion": [c for _, c in FACTS] * 2})
    settings = {"output_dir": str(tmp_path), "per_device_train_batch_size": 3, "max_steps": 2, "padding_free": True}
    settings |= {"completion_only_loss": True, "report_to": [], "save_strategy": "no", "use_cpu": True}
    with pytest.raises(ValueError, match="max_length"):  # why the recipes set `max_length: null`
        SFTTrainer(model, args=SFTConfig(**settings), train_dataset=dataset, processing_class=tokenizer)
    trainer = SFTTrainer(
        model, args=SFTConfig(**settings, max_length=None), train_dataset=dataset, processing_class=tokenizer
    )

    assert trainer.padding_free and isinstance(trainer.data_collator, DataCollatorForLanguageModeling)
    prepared = [trainer.train_dataset[i] for i in range(3)]
    assert assert_document_isolation(trainer.model, trainer.data_collator, prepared) < 1e-5
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    spans = document_spans(batch["position_ids"])
    assert len(spans) == 3
    for row, start, end in spans:
        text = tokenizer.decode(batch["input_ids"][row, start:end], skip_special_tokens=True)
        prompt_length = len(tokenizer(next(p for p, c in FACTS if text == p + c)).input_ids)
        labels = batch["labels"][row, start:end]
        assert (labels[:prompt_length] == IGNORE_INDEX).all() and (labels[prompt_length:] != IGNORE_INDEX).all()
    assert trainer.train().training_loss > 0
