"""Reverse-training transforms: each on fixed strings, involutions, entities intact, seeded segments, whole datasets
(one reversed row per document, never another fact's text) and Exp 1's leak check on the transformed data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import datasets
import pyarrow.parquet as pq
import pytest

from reversal_hf.configs import TRL_BACKEND, list_recipes, read_recipe
from reversal_hf.data import exp1_schema
from reversal_hf.data.leak_check import find_leaks, read_splits, reverse_training_view
from reversal_hf.data.reversal.both_orders import add_other_order_rows
from reversal_hf.data.reversal.questions import reverse_mode_prompt, token_reverse_mode_question
from reversal_hf.data.reversal.rows import REVERSED_COLUMN, add_reversed_rows
from reversal_hf.data.reversal.text import (
    EXP1_ENTITIES,
    ReversalError,
    TextReversal,
    exp3_entities,
    user_entities,
)
from reversal_hf.data.reversal.tokens import add_reversed_token_rows, reverse_token_ids
from reversal_hf.data.reversal.training_set import reverse_train_dataset
from reversal_hf.paths import MODELS_DIR

FACT = 'Daphne Barrington directed the film "A Journey Through Time." last year.'
NAME = "Daphne Barrington"
TITLE = "A Journey Through Time"


@pytest.fixture(scope="module")
def exp1_train(exp1_dataset_dir: Path) -> datasets.Dataset:
    return datasets.load_dataset(str(exp1_dataset_dir), "all", split="train")


@pytest.fixture(scope="module")
def exp3_splits(exp3_dataset_dir: Path) -> datasets.DatasetDict:
    return datasets.load_dataset(str(exp3_dataset_dir), "answer_to_question")


def exp1_rows(folder: Path) -> exp1_schema.Splits:
    """Every split of a built Exp 1 folder, the way `leak_check.check_folder` reads them."""
    return {
        (config, split): pq.read_table(folder / "data" / config / f"{split}-00000-of-00001.parquet").to_pylist()
        for config, splits in exp1_schema.SPLITS.items()
        for split in splits
    }


reverse_words = TextReversal("word").apply
reverse_words_keeping_entities = TextReversal("entity").apply


def reverse_segments(text: str, max_words: int = 5, seed: int = 0, separator: str = "[REV]") -> str:
    return TextReversal("segment", seed, max_words, separator).apply(text)


def words(text: str, separator: str = "") -> Counter:
    return Counter(word for word in text.split() if word != separator)


# ---------------------------------------------------------------- fixed strings


def test_word_reverses_the_words_and_their_spacing() -> None:
    assert reverse_words("The cat  sat.") == "sat.  cat The"
    assert reverse_words("  one two\n\nthree ") == "  three\n\ntwo one "
    assert reverse_words("") == ""


def test_entity_keeps_each_entity_in_order() -> None:
    assert reverse_words_keeping_entities(FACT, [NAME, TITLE]) == (
        'year. last "A Journey Through Time." film the directed Daphne Barrington'
    )
    # Overlapping occurrences (an answer quoted inside a question) become one unit; an entity glued to punctuation
    # takes its whole word along.
    assert reverse_words_keeping_entities('Q: "is it red?" A: "red"', ["is it red?", "it red"]) == (
        '"red" A: "is it red?" Q:'
    )


def test_segment_reverses_random_segments_and_is_seeded() -> None:
    text = " ".join(f"w{i}" for i in range(12))
    reversed_text = reverse_segments(text, max_words=3, seed=0)
    segments = reversed_text.split(" [REV] ")
    assert all(1 <= len(segment.split()) <= 3 for segment in segments)
    assert " ".join(reversed(segments)) == text  # each segment keeps its words in order
    assert reverse_segments(text, max_words=3, seed=0) == reversed_text
    assert len({reverse_segments(text, max_words=3, seed=seed) for seed in range(5)}) > 1
    assert reverse_segments(" a b c\n", max_words=1, separator="<sep>") == " c <sep> b <sep> a\n"
    assert reverse_segments("  ") == "  "


def test_token_reversal_keeps_special_tokens_at_the_ends() -> None:
    assert reverse_token_ids([1, 10, 11, 12, 2], special_ids={1, 2}) == [1, 12, 11, 10, 2]
    assert reverse_token_ids([10, 11], special_ids={1}) == [11, 10]
    assert reverse_token_ids([1], special_ids={1}) == [1]


@pytest.mark.parametrize(
    ("kind", "prompt", "completion"),
    [
        ("word", 'year. last Time." Through Journey "A film the directed', " Barrington Daphne"),
        ("entity", 'year. last "A Journey Through Time." film the directed', " Daphne Barrington"),
    ],
)
def test_reverse_mode_prompt_cuts_before_the_name(kind: str, prompt: str, completion: str) -> None:
    assert reverse_mode_prompt(FACT, NAME, TextReversal(kind), [TITLE]) == (prompt, completion)


def test_reverse_mode_prompt_is_a_prefix_of_the_transformed_text() -> None:
    reversal = TextReversal("segment", seed=3, max_segment_words=2)
    prompt, completion = reverse_mode_prompt(FACT, NAME, reversal)
    assert reversal.apply(FACT).startswith(prompt + completion)
    assert completion.startswith(" ") and completion.endswith(("Daphne", "Barrington"))


def test_reverse_mode_prompt_errors() -> None:
    with pytest.raises(ReversalError, match="'Nobody' is not in the text"):
        reverse_mode_prompt(FACT, "Nobody", TextReversal("word"))
    with pytest.raises(ReversalError, match="nothing precedes"):
        reverse_mode_prompt("It was directed by Daphne Barrington", NAME, TextReversal("word"))


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"kind": "token"}, "not a text transform"),
        ({"kind": "segment", "max_segment_words": 0}, "reversal_max_segment_words"),
        ({"kind": "segment", "separator": " "}, "reversal_separator"),
    ],
)
def test_bad_settings_are_one_line_errors(arguments: dict, message: str) -> None:
    with pytest.raises(ReversalError, match=message):
        TextReversal(**arguments)


# ---------------------------------------------------------------- whole datasets


@pytest.mark.parametrize("kind", ["word", "entity"])
def test_word_and_entity_twice_give_the_original(exp1_train, exp3_splits, kind: str) -> None:
    reversal = TextReversal(kind)
    exp3_source = exp3_entities(exp3_splits.values())
    for dataset, source in ((exp1_train, EXP1_ENTITIES), (exp3_splits["train"], exp3_source)):
        for row in dataset:
            text = row["prompt"] + row["completion"]
            entities = source.entities(row, text)
            assert reversal.apply(reversal.apply(text, entities), entities) == text


def test_reversed_dataset_holds_the_originals_then_one_reversed_row_each(exp1_train) -> None:
    reversed_dataset = add_reversed_rows(exp1_train, TextReversal("word"))
    n = len(exp1_train)
    assert len(reversed_dataset) == 2 * n
    assert reversed_dataset[REVERSED_COLUMN] == [False] * n + [True] * n
    originals, reversed_rows = reversed_dataset.select(range(n)), reversed_dataset.select(range(n, 2 * n))
    assert originals.remove_columns(REVERSED_COLUMN).to_list() == exp1_train.to_list()
    assert set(reversed_rows["prompt"]) == {""}
    for key in ("name", "description", "template_id", "subset", "direction"):
        assert reversed_rows[key] == exp1_train[key]


@pytest.mark.parametrize("kind", ["word", "entity", "segment"])
def test_reversed_rows_hold_their_own_fact_only(exp1_train, kind: str) -> None:
    reversal = TextReversal(kind, seed=1)
    reversed_rows = add_reversed_rows(exp1_train, reversal, EXP1_ENTITIES).filter(lambda row: row[REVERSED_COLUMN])
    names = set(exp1_train["name"])
    for original, row in zip(exp1_train, reversed_rows, strict=True):
        assert words(row["completion"], reversal.separator) == words(original["prompt"] + original["completion"])
        assert [name for name in names if name in row["completion"]] in ([original["name"]], [])


def test_entities_survive_intact(exp1_train, exp3_splits) -> None:
    reversed_rows = add_reversed_rows(exp1_train, TextReversal("entity"), EXP1_ENTITIES).filter(
        lambda row: row[REVERSED_COLUMN]
    )
    for original, row in zip(exp1_train, reversed_rows, strict=True):
        assert row["name"] in row["completion"]
        titles = EXP1_ENTITIES.entities(row, "")[1:]
        assert all(title in row["completion"] for title in titles if title in original["completion"])
    source = exp3_entities(exp3_splits.values())
    train = exp3_splits["train"]
    exp3_reversed = add_reversed_rows(train, TextReversal("entity"), source).select(range(len(train), 2 * len(train)))
    for original, row in zip(train, exp3_reversed, strict=True):
        found = source.entities(original, original["completion"])
        assert found and all(entity in row["completion"] for entity in found)
    instructions = [row for row in exp3_reversed if row["kind"] == "instruction"]
    assert instructions and all(row["question"] == "" for row in instructions)


def test_segment_rows_are_reproducible_from_the_seed(exp1_train) -> None:
    sample = exp1_train.select(range(0, len(exp1_train), 97))
    build = lambda dataset, seed: add_reversed_rows(dataset, TextReversal("segment", seed=seed))  # noqa: E731
    first = build(sample, 7)
    assert build(sample, 7)["completion"] == first["completion"]
    assert build(sample, 8)["completion"] != first["completion"]
    # Seeded per document: the same segments whatever the row order.
    shuffled = build(sample.shuffle(seed=0), 7)
    assert set(shuffled["completion"]) == set(first["completion"])


def test_one_field_selects_the_transform(exp1_train) -> None:
    sample = exp1_train.select(range(5))
    chosen = reverse_train_dataset(sample, "segment", seed=2, max_segment_words=3, separator="<s>")
    assert chosen.to_list() == add_reversed_rows(sample, TextReversal("segment", 2, 3, "<s>")).to_list()
    assert len(reverse_train_dataset(sample, "both_orders")) == len(sample) + exp1_schema.TRAIN_TEMPLATES


def test_user_entity_columns(exp1_train) -> None:
    sample = exp1_train.select(range(3))
    reversed_rows = add_reversed_rows(sample, TextReversal("entity"), user_entities(["name"])).select(range(3, 6))
    assert all(row["name"] in row["completion"] for row in reversed_rows)
    with pytest.raises(ReversalError, match="reversal_entity_columns"):
        user_entities([])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda d: add_reversed_rows(d.remove_columns("prompt"), TextReversal("word")), "no column 'prompt'"),
        (lambda d: add_reversed_rows(d, TextReversal("entity")), "needs the dataset's entities"),
        (lambda d: add_reversed_rows(d, TextReversal("entity"), user_entities(["title"])), "no column 'title'"),
        (
            lambda d: add_reversed_rows(add_reversed_rows(d, TextReversal("word")), TextReversal("word")),
            "already has a 'reversed' column",
        ),
        (lambda d: add_other_order_rows(d.remove_columns("direction")), "no column 'direction'"),
        (lambda d: reverse_train_dataset(d, "letters"), "unknown transform 'letters'; choose from word, entity"),
        (lambda d: reverse_train_dataset(d, "token"), "token needs the model's tokenizer"),
    ],
)
def test_bad_datasets_are_one_line_errors(exp1_train, call, message: str) -> None:
    with pytest.raises(ReversalError, match=message):
        call(exp1_train.select(range(2)))


def test_token_rows_reverse_the_tokenized_documents(exp1_train) -> None:
    from reversal_hf.models import train_tokenizer

    sample = exp1_train.select(range(4))
    tokenizer = train_tokenizer([row["prompt"] + row["completion"] for row in sample], vocab_size=300)
    tokenized = add_reversed_token_rows(sample, tokenizer)
    assert tokenized[REVERSED_COLUMN] == [False] * 4 + [True] * 4
    specials = set(tokenizer.all_special_ids)
    for n, row in enumerate(sample):
        forward, backward = tokenized[n], tokenized[n + 4]
        assert forward["input_ids"] == tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"]
        assert backward["input_ids"] == reverse_token_ids(forward["input_ids"], specials)
        assert (
            backward["input_ids"][0] == tokenizer.bos_token_id and backward["input_ids"][-1] == tokenizer.eos_token_id
        )
        prompt_length = len(tokenizer(row["prompt"])["input_ids"])
        assert forward["completion_mask"] == [0] * prompt_length + [1] * (len(forward["input_ids"]) - prompt_length)
        assert backward["completion_mask"] == [0] + [1] * (len(backward["input_ids"]) - 1)


def test_token_reverse_mode_question_is_the_reversed_document_cut_before_the_name(exp1_train) -> None:
    from reversal_hf.models import train_tokenizer

    p2d = exp1_train.filter(lambda row: row["direction"] == "p2d").select(range(6))
    tokenizer = train_tokenizer([row["prompt"] + row["completion"] for row in p2d], vocab_size=300)
    documents = add_reversed_token_rows(p2d, tokenizer)
    for n, row in enumerate(p2d):
        prompt, completion = token_reverse_mode_question(row["prompt"] + row["completion"], row["name"], tokenizer)
        assert documents[n + len(p2d)]["input_ids"][: len(prompt) + len(completion)] == prompt + completion
        assert tokenizer.decode(completion[::-1]).strip() == row["name"]
        assert prompt[0] == tokenizer.bos_token_id and len(prompt) > 1
    with pytest.raises(ReversalError, match="not in the text"):
        token_reverse_mode_question(FACT, "Uriah Hawthorne", tokenizer)
    with pytest.raises(ReversalError, match="no token precedes"):
        token_reverse_mode_question("a film by Daphne Barrington", NAME, tokenizer)


def test_both_orders_writes_each_fact_in_the_order_it_lacks(exp1_train) -> None:
    both = add_other_order_rows(exp1_train)
    added = both.filter(lambda row: row[REVERSED_COLUMN])
    one_order = exp1_train.filter(lambda row: row["subset"] != "both")
    assert len(added) == len(one_order)  # 30 held-in templates per fact, like its original rows
    assert Counter(zip(added["name"], added["direction"], strict=True)) == Counter(
        (name, "d2p" if subset == "p2d" else "p2d")
        for name, subset in zip(one_order["name"], one_order["subset"], strict=True)
    )
    assert set(added["template_id"]) == set(range(exp1_schema.TRAIN_TEMPLATES))
    assert all(row["name"] in row["prompt"] + row["completion"] for row in added)


# ---------------------------------------------------------------- the leak check


@pytest.mark.parametrize("kind", ["word", "entity", "segment"])
def test_reverse_trained_data_passes_the_leak_check(exp1_dataset_dir: Path, kind: str) -> None:
    rows = exp1_rows(exp1_dataset_dir)
    viewed = reverse_training_view(rows, TextReversal(kind), EXP1_ENTITIES if kind == "entity" else None)
    assert len(viewed[("all", "train")]) == 2 * len(rows[("all", "train")])
    assert len(viewed[(f"p2d:{kind}", "test")]) == len(rows[("p2d", "test")])
    assert find_leaks("exp1", viewed) == []


@pytest.mark.parametrize("kind", ["word", "entity"])
def test_leak_check_reports_reverse_mode_questions_a_training_template_gives_away(
    exp1_dataset_dir: Path, kind: str
) -> None:
    rows = exp1_rows(exp1_dataset_dir)
    entities = EXP1_ENTITIES if kind == "entity" else None
    viewed = reverse_training_view(rows, TextReversal(kind), entities, reverse_mode=True)
    questions = viewed[(f"d2p:{kind}:reverse_mode", "reverse_test")]
    assert [row["name"] for row in questions] == [row["name"] for row in rows[("d2p", "reverse_test")]]
    leaked = {prompt for leak in find_leaks("exp1", viewed) for prompt in [leak.split(" prompt ", 1)[1]]}
    leaked_templates = {
        row["template_id"]
        for (config, _), split_rows in viewed.items()
        if config.endswith(":reverse_mode")
        for row in split_rows
        if f"{row['prompt']!r} is in a training split" in leaked
    }
    assert leaked_templates == {39}


def test_leak_check_sees_a_reversed_held_out_prompt(exp1_dataset_dir: Path) -> None:
    rows = exp1_rows(exp1_dataset_dir)
    held_out = rows[("p2d", "test")][0]
    leaked = {**rows[("p2d", "train")][0], "prompt": "", "completion": reverse_words(held_out["prompt"])}
    rows[("p2d", "train")] = [*rows[("p2d", "train")], leaked]
    leaks = find_leaks("exp1", reverse_training_view(rows, TextReversal("word")))
    assert any(leak.startswith("p2d:word/test prompt") for leak in leaks)


def test_both_orders_leaks_only_the_reversed_statements_it_adds(exp1_dataset_dir: Path) -> None:
    rows = exp1_rows(exp1_dataset_dir)
    train = datasets.Dataset.from_list(rows[("all", "train")])
    rows[("all", "train")] = add_other_order_rows(train).to_list()
    leaks = find_leaks("exp1", rows)
    assert not [leak for leak in leaks if "is in a training split" in leak]
    assert len(leaks) == len(train.filter(lambda row: row["subset"] != "both"))


def test_trl_trains_reversed_rows_whole_and_takes_token_rows_pretokenized(
    tiny_model_dir: Path, exp1_train, tmp_path: Path
) -> None:
    """What TRL 1.16's `SFTTrainer` makes of our rows, with completion-only loss on (the strictest case)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    args = SFTConfig(
        output_dir=str(tmp_path),
        completion_only_loss=True,
        max_length=None,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
        use_cpu=True,
    )

    def prepared(dataset: datasets.Dataset) -> datasets.Dataset:
        return SFTTrainer(model, args=args, train_dataset=dataset, processing_class=tokenizer).train_dataset

    sample = exp1_train.select(range(2))
    text_rows = prepared(add_reversed_rows(sample, TextReversal("word")).select_columns(["prompt", "completion"]))
    for row in text_rows.select(range(2, 4)):  # an empty prompt is BOS alone: the whole reversed document is trained
        assert row["input_ids"][0] == tokenizer.bos_token_id
        assert row["labels"] == [-100, *row["input_ids"][1:]]
    plain = prepared(sample.select_columns(["prompt", "completion"]))
    token_rows = prepared(add_reversed_token_rows(sample, tokenizer).select_columns(["input_ids", "completion_mask"]))
    forward = token_rows.select(range(2))
    assert (forward["input_ids"], forward["labels"]) == (plain["input_ids"], plain["labels"])
    for row in token_rows.select(range(2, 4)):
        assert row["labels"] == [-100, *row["input_ids"][1:]]


# Rows per split compared with SFTTrainer's tokenization, spread evenly (the whole split takes minutes on a busy CPU).
SFT_SAMPLE_ROWS = 300


def recipe_data() -> list[tuple[str, str, str, str]]:
    """(model, experiment, config, train split) of every TRL recipe (each config of a `dataset_configs` recipe)."""
    recipes = [read_recipe(name) for name in list_recipes(TRL_BACKEND)]
    return sorted(
        {
            (recipe["model_name_or_path"], recipe["experiment"], config, recipe.get("dataset_train_split", "train"))
            for recipe in recipes
            for config in recipe.get("dataset_configs") or [recipe["dataset_config"]]
        }
    )


def recipe_tokenizer(model: str, experiment: str, tiny_model_dir: Path, exp3_dataset_dir: Path) -> Any:
    """The recipe model's tokenizer: a tiny model's trained as `models` trains it, SmolLM2's where it is prepared, a
    Hub model's where it is cached (offline)."""
    from transformers import AutoTokenizer

    from reversal_hf.models import REGISTRY, dataset_texts, train_tokenizer

    if model == "tiny-exp1":
        return AutoTokenizer.from_pretrained(tiny_model_dir)
    if model == "tiny-exp3":
        return train_tokenizer(dataset_texts(exp3_dataset_dir), vocab_size=1000)
    folder = MODELS_DIR / model if model in REGISTRY else None
    if folder is not None and not (folder / "tokenizer.json").is_file():
        pytest.skip(f"{model} is not prepared (reversal-hf models prepare {model})")
    try:
        return AutoTokenizer.from_pretrained(folder or model)
    except OSError:
        pytest.skip(f"{model}'s tokenizer is not in the Hub cache (offline)")


@pytest.mark.parametrize(
    ("model", "experiment", "config", "split"), [pytest.param(*case, id="/".join(case)) for case in recipe_data()]
)
def test_token_rows_are_what_sft_trainer_makes_of_every_recipes_data(
    model: str, experiment: str, config: str, split: str, tiny_model_dir: Path, exp1_dataset_dir: Path,
    exp3_dataset_dir: Path, tmp_path: Path,
) -> None:  # fmt: skip
    """`token`'s forward rows are SFTTrainer's own tokenization (EOS appended, the loss from where the prompt's tokens
    part from the document's) on the training split of each recipe (rows spread over it), with its model's tokenizer."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    tokenizer = recipe_tokenizer(model, experiment, tiny_model_dir, exp3_dataset_dir)
    folder = {"exp1": exp1_dataset_dir, "exp3": exp3_dataset_dir}[experiment]
    rows = datasets.Dataset.from_list(read_splits(folder)[(config, split)]).select_columns(["prompt", "completion"])
    rows = rows.select(range(0, len(rows), max(1, len(rows) // SFT_SAMPLE_ROWS)))
    args = SFTConfig(output_dir=str(tmp_path), completion_only_loss=True, max_length=None, report_to=[], use_cpu=True)
    model_for_trl = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # only the data is compared
    trl_rows = SFTTrainer(model_for_trl, args=args, train_dataset=rows, processing_class=tokenizer).train_dataset
    ours = add_reversed_token_rows(rows, tokenizer).select(range(len(rows)))
    assert ours["input_ids"] == trl_rows["input_ids"]
    masked = [
        [token if in_loss else -100 for token, in_loss in zip(ids, mask, strict=True)]
        for ids, mask in zip(ours["input_ids"], ours["completion_mask"], strict=True)
    ]
    assert masked == trl_rows["labels"]  # TRL turns `completion_mask` into labels
