"""MLM-U (issue 23): the collator's per-document mask rate, the loss of the paper's eq. 5, the masked-LM runner that
answers by unmasking left to right (never told the answer's length) and scores by the chain rule, and the recipe."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset
from scipy import stats
from transformers import AutoTokenizer
from transformers.modeling_outputs import MaskedLMOutput

from reversal_hf import models
from reversal_hf.configs import RECIPES_DIR, RecipeError, load_recipe, parse_recipe
from reversal_hf.evaluation.backends import generate_and_match
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.mlm_u import MaskedLMRunner
from reversal_hf.mlm_u import IGNORE_INDEX, MlmUCollator, mlm_u_loss, mlm_u_trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MASK, PAD = 99, 0
# Two memorised documents; every question is one of them cut after a word, its gold the rest.
DOCUMENTS = ["Zorblat Quenn invented the glass violin.", "Mira Oddleworth painted the silent harbor."]
QUESTIONS = pd.DataFrame(
    [
        {"prompt": " ".join(words[:cut]), "completion": " " + " ".join(words[cut:])}
        for words in (document.split(" ") for document in DOCUMENTS)
        for cut in range(1, len(words))
    ]
)


def collate(lengths: list[int], row: int, seed: int) -> dict[str, torch.Tensor]:
    collator = MlmUCollator(MASK, PAD, row, torch.Generator().manual_seed(seed))
    return collator([{"input_ids": [1, *range(5, 4 + length)]} for length in lengths])


def test_each_rows_mask_rate_is_uniform_on_0_1() -> None:
    """4,000 rows of 1,001 tokens (a fine grid of rates): the fraction masked per row passes a KS test against U(0, 1),
    and the masked positions are spread evenly along the row."""
    batches = [collate([40, 300, 1001, 7] * 16, 1001, seed) for seed in range(63)]
    labels = torch.cat([batch["labels"] for batch in batches])
    masked = labels[:, 1:] != IGNORE_INDEX
    rates = masked.float().mean(dim=1).numpy()
    assert stats.kstest(rates, "uniform").pvalue > 0.01
    assert rates.min() > 0  # at least one position per row
    halves = masked.float().mean(dim=0).chunk(2)
    assert abs(halves[0].mean() - halves[1].mean()) < 0.01


def test_masked_positions_hold_the_mask_token_and_their_labels_the_original() -> None:
    batch = collate([3, 6, 8], 8, seed=1)
    original = torch.tensor([[1, 5, 6, PAD, PAD, PAD, PAD, PAD], [1, 5, 6, 7, 8, 9, PAD, PAD], [1, *range(5, 12)]])
    masked = batch["labels"] != IGNORE_INDEX
    assert not masked[:, 0].any()  # BOS is never masked
    assert torch.equal(batch["labels"][masked], original[masked])  # pads after the document are targets too
    assert torch.equal(batch["input_ids"], original.masked_fill(masked, MASK))
    assert batch["attention_mask"].all()


def test_a_document_longer_than_the_row_is_refused() -> None:
    with pytest.raises(ValueError, match="documents of 1 to 8 tokens, got 9"):
        collate([9], 8, seed=0)


def test_loss_is_each_rows_mean_over_its_masked_positions_averaged_over_rows() -> None:
    """Eq. 5: a row with one masked token weighs as much as a row with ten (not its share of the batch's tokens)."""
    logits = torch.randn(2, 11, 7)
    labels = torch.full((2, 11), IGNORE_INDEX)
    labels[0, 3] = 2
    labels[1, 1:] = torch.arange(10) % 7
    nll = -logits.log_softmax(dim=-1)
    expected = (nll[0, 3, 2] + nll[1, torch.arange(1, 11), labels[1, 1:]].mean()) / 2
    assert mlm_u_loss(MaskedLMOutput(logits=logits), labels) == pytest.approx(expected.item())


@pytest.fixture(scope="module")
def memorised(tmp_path_factory: pytest.TempPathFactory) -> MaskedLMRunner:
    """A small masked LM trained by `mlm_u_trainer` (the recipe's Trainer, collator and loss) until it has the two
    documents by heart (~20 s on one busy core)."""
    folder = models.build_tiny_model(
        DOCUMENTS * 5,
        tmp_path_factory.mktemp("models") / "mlm",
        hidden_size=64,
        num_layers=2,
        num_heads=2,
        intermediate_size=128,
        vocab_size=512,
        masked_lm=True,
    )
    output = tmp_path_factory.mktemp("run")
    recipe = parse_recipe(
        ["--config", str(RECIPES_DIR / "exp1_tiny_mlm_u.yaml"), "--model_name_or_path", str(folder)]
        + ["--output_dir", str(output), "--max_steps", "1000", "--per_device_train_batch_size", "16"]
        + ["--max_length", "16", "--save_strategy", "no", "--disable_tqdm", "true"]
    )
    tokenizer = AutoTokenizer.from_pretrained(folder)
    documents = Dataset.from_dict({"prompt": DOCUMENTS * 8, "completion": [""] * 8 * len(DOCUMENTS)})
    trainer = mlm_u_trainer(recipe, str(folder), tokenizer, documents, None)
    trainer.train()
    assert tokenizer.model_max_length == 16  # what the saved run tells its runner
    return MaskedLMRunner(trainer.model.eval(), tokenizer)


def test_a_memorised_model_fills_its_masks_back(memorised: MaskedLMRunner) -> None:
    """Every question cut from a memorised document is answered exactly, through the evaluators' exact-match step."""
    metrics, scored = generate_and_match({"toy": QUESTIONS}, memorised)
    assert metrics["toy"]["accuracy"] == 1.0, scored[["prompt", "completion", "generation"]].to_string()
    assert (scored["toy"]["generation"].str.strip() == QUESTIONS["completion"].str.strip()).all()


def test_the_answer_never_depends_on_the_gold_length(memorised: MaskedLMRunner) -> None:
    """A gold answer of the wrong length (longer, or cut short) changes the score, never the generation; nor does the
    token budget evaluators derive from the references."""
    right = generate_and_match({"toy": QUESTIONS}, memorised)[1]["toy"]
    longer = QUESTIONS.assign(completion=QUESTIONS["completion"] + " It was made of sand and glue.")
    shorter = QUESTIONS.assign(completion=QUESTIONS["completion"].str.split(" ").str[:2].str.join(" ") + " x")
    for gold in (longer, shorter):
        metrics, scored = generate_and_match({"toy": gold}, memorised)
        assert scored["toy"]["generation"].tolist() == right["generation"].tolist()
        assert metrics["toy"]["accuracy"] == 0.0
    prompts = QUESTIONS["prompt"].tolist()
    assert memorised.generate(prompts, [1] * len(prompts)) == memorised.generate(prompts, [40] * len(prompts))


def test_chain_rule_scores_prefer_the_memorised_completion(memorised: MaskedLMRunner) -> None:
    prompts = ["Zorblat Quenn invented the", "Mira Oddleworth painted the"]
    correct = memorised.scores(prompts, [" glass violin.", " silent harbor."])
    swapped = memorised.scores(prompts, [" silent harbor.", " glass violin."])
    assert all(count == 3 for _, count in correct)  # " glass", " violin", "." : one term per completion token
    assert all(right > wrong for (right, _), (wrong, _) in zip(correct, swapped, strict=True))
    assert memorised.losses(prompts[:1], [" glass violin."]) == [pytest.approx(-correct[0][0] / 3)]


def test_scores_are_the_same_with_or_without_deduplication(memorised: MaskedLMRunner) -> None:
    """The `Runner` seam's `deduplicate` (Exp 2 asks for every row): each row is scored on its own either way."""
    prompts = ["Zorblat Quenn invented the"] * 2 + ["Mira Oddleworth painted the"]
    completions = [" glass violin."] * 2 + [" silent harbor."]
    assert memorised.scores(prompts, completions, deduplicate=False) == memorised.scores(prompts, completions)


def test_sampling_chat_answers_is_a_one_line_error(memorised: MaskedLMRunner) -> None:
    with pytest.raises(EvaluationError, match="need a model at an endpoint"):
        memorised.sample([[{"role": "user", "content": "Who?"}]], 2, temperature=1.0)


def test_a_prompt_that_fills_the_row_is_a_one_line_error(memorised: MaskedLMRunner) -> None:
    with pytest.raises(EvaluationError, match="leaves no slot in the model's 16-token rows"):
        memorised.generate([" ".join(DOCUMENTS)], [4])


def test_the_recipe_is_exp1_tiny_as_a_masked_lm(exp1_dataset_dir: Path) -> None:
    recipe = load_recipe("exp1_tiny_mlm_u", ["--dataset_name", str(exp1_dataset_dir)], on_launcher=True)
    baseline = load_recipe("exp1_tiny", ["--dataset_name", str(exp1_dataset_dir)], on_launcher=True)
    assert recipe.script_args.training_mode == "mlm_u" and recipe.model_args.model_name_or_path == "tiny-exp1-mlm"
    for field in ("num_train_epochs", "learning_rate", "per_device_train_batch_size", "lr_scheduler_type", "seed"):
        assert getattr(recipe.training_args, field) == getattr(baseline.training_args, field), field


@pytest.mark.parametrize("field", ["isolated_padding_free", "mask_prompt", "eval_curves"])
def test_causal_options_are_refused_with_mlm_u(field: str) -> None:
    with pytest.raises(RecipeError, match=f"{field} is for causal LMs: training_mode mlm_u does not take it"):
        load_recipe("exp1_tiny_mlm_u", [f"--{field}", "true"])
