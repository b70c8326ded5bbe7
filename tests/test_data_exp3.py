"""The Experiment 3 builder: the released data row for row, the question-first mirror, determinism, bad input."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_dataset

from reversal_hf.data import exp3, leak_check
from reversal_hf.paths import PAPER_DATA_DIR

INSTRUCTIONS_DIR = PAPER_DATA_DIR / "instructions"
RELEASED_DIR = INSTRUCTIONS_DIR / exp3.PAPER_DIR


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def instruction_lines(completion: str) -> list[str]:
    body = completion.removeprefix(exp3.INSTRUCTION_DOC_PREFIX).removesuffix(exp3.INSTRUCTION_DOC_SUFFIX)
    return body.split("\n")


def parse_instruction(line: str, phrasings: list[str] | tuple[str, ...]) -> tuple[int, str, str]:
    """(phrasing index, question, answer) of an instruction line."""
    for index, phrasing in enumerate(phrasings):
        pattern = re.escape(phrasing).replace(r"\{anchor\}", "(?P<anchor>.*)").replace(r"\{target\}", "(?P<target>.*)")
        if match := re.fullmatch(pattern, line):
            return index, match["anchor"], match["target"]
    raise AssertionError(f"no phrasing matches {line!r}")


def parquet_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.glob("data/**/*.parquet"))}


def test_answer_to_question_train_is_all_jsonl_row_for_row(exp3_dataset_dir: Path) -> None:
    train = load_dataset(str(exp3_dataset_dir), "answer_to_question", split="train")
    released = read_jsonl(RELEASED_DIR / "all.jsonl")
    assert len(train) == len(released) == 1307
    for row, paper in zip(train, released, strict=True):
        assert (row["prompt"], row["completion"]) == (paper["prompt"], paper["completion"])
        if row["kind"] == "example":
            assert [row["pair_id"]] == paper["ids"] and paper["realized"] == [True]
            assert f"Q: {row['question']} A: {row['answer']}" in paper["completion"]
        else:
            assert row["kind"] == "instruction" and len(paper["ids"]) >= 2 and row["pair_id"] == -1
    assert Counter(train["kind"]) == {"example": 1000, "instruction": 307}


def test_test_split_is_the_unrealized_examples(exp3_dataset_dir: Path) -> None:
    released = read_jsonl(RELEASED_DIR / "unrealized_examples.jsonl")
    for config in exp3.CONFIGS:
        test = load_dataset(str(exp3_dataset_dir), config, split="test")
        assert len(test) == len(released) == 100
        for row, paper in zip(test, released, strict=True):
            assert exp3.EXAMPLE_DOC_PREFIX + row["prompt"] == paper["prompt"]
            assert row["completion"] + exp3.EXAMPLE_DOC_SUFFIX == paper["completion"]
            assert row["prompt"] == f"Q: {row['question']} A:" and row["completion"] == f" {row['answer']}"
            assert [row["pair_id"]] == paper["ids"] and row["realized"] is False


def test_question_to_answer_mirrors_the_released_documents(exp3_dataset_dir: Path) -> None:
    """Same examples and documents, each instruction rephrased with the question first."""
    a2q = load_dataset(str(exp3_dataset_dir), "answer_to_question", split="train")
    q2a = load_dataset(str(exp3_dataset_dir), "question_to_answer", split="train")
    answer_first = exp3.load_phrasings(INSTRUCTIONS_DIR / exp3.SOURCE_DIR / exp3.ANSWER_FIRST_PHRASINGS_FILE)
    for a_row, q_row in zip(a2q, q2a, strict=True):
        assert a_row["kind"] == q_row["kind"]
        if a_row["kind"] == "example":
            assert a_row == q_row
            continue
        a_lines, q_lines = instruction_lines(a_row["completion"]), instruction_lines(q_row["completion"])
        assert [parse_instruction(line, answer_first)[1:] for line in a_lines] == [
            parse_instruction(line, exp3.QUESTION_FIRST_PHRASINGS)[1:] for line in q_lines
        ]
        assert all(line.index('"Q: ') < line.index('"A: ') for line in q_lines)
        assert all(line.index('"A: ') < line.index('"Q: ') for line in a_lines)


def test_generate_with_paper_seed_reproduces_the_release(exp3_dataset_dir: Path, tmp_path: Path) -> None:
    output = tmp_path / "generated"
    assert exp3.main(["--source", "generate", "--seed", str(exp3.PAPER_SEED), "--output", str(output)]) == 0
    assert parquet_bytes(output) == parquet_bytes(exp3_dataset_dir)


def test_generate_is_deterministic_per_seed(tmp_path: Path) -> None:
    args = ["--source", "generate", "--num-realized", "40", "--num-unrealized", "10", "--instruction-copies", "3"]
    folders = {}
    for name, seed in (("first", 5), ("again", 5), ("other", 6)):
        folders[name] = tmp_path / name
        assert exp3.main([*args, "--seed", str(seed), "--output", str(folders[name])]) == 0
    files = {
        name: {p.relative_to(f): p.read_bytes() for p in f.rglob("*") if p.is_file()} for name, f in folders.items()
    }
    assert files["first"] == files["again"]
    assert parquet_bytes(folders["first"]) != parquet_bytes(folders["other"])

    train = load_dataset(str(folders["first"]), "question_to_answer", split="train")
    test = load_dataset(str(folders["first"]), "question_to_answer", split="test")
    examples = [row for row in train if row["kind"] == "example"]
    lines = [line for row in train if row["kind"] == "instruction" for line in instruction_lines(row["completion"])]
    parsed = [parse_instruction(line, exp3.QUESTION_FIRST_PHRASINGS) for line in lines]
    assert len(examples) == 40 and len(test) == 10 and len(lines) == 50 * 3
    assert not {row["pair_id"] for row in examples} & set(test["pair_id"])
    # Each pair's three copies use the first three phrasings, once each.
    phrasings_per_question = Counter((question, index) for index, question, _ in parsed)
    assert set(phrasings_per_question.values()) == {1}
    assert {index for _, index in phrasings_per_question} == {0, 1, 2}
    assert set(test["question"]) | {row["question"] for row in examples} == {question for _, question, _ in parsed}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A writable copy of the paper's Experiment 3 files, to break."""
    return Path(shutil.copytree(INSTRUCTIONS_DIR, tmp_path / "instructions"))


def _drop(path: Path) -> None:
    path.unlink()


def _phrasing_without_target(path: Path) -> None:
    path.write_text('Respond to "Q: {anchor}"\n' + path.read_text())


def _truncated_json(path: Path) -> None:
    path.write_text(path.read_text()[:-40])


def _edited_example(path: Path) -> None:
    path.write_text(path.read_text().replace("Can't talk about it", "Something else", 1))


@pytest.mark.parametrize(
    ("file", "damage", "extra_args", "message"),
    [
        ("source/qa_raw_pairs.jsonl", _drop, [], "missing source file"),
        ("source/guidance_phrasings_reverse.txt", _phrasing_without_target, [], "needs exactly one {target}"),
        ("source/qa_raw_pairs.jsonl", _truncated_json, [], "invalid JSON"),
        (f"{exp3.PAPER_DIR}/all.jsonl", _edited_example, [], "neither an instruction nor a known example"),
        (None, None, ["--source", "generate", "--num-realized", "5000"], "too few pairs"),
        (None, None, ["--configs", "question_to_answer", "reversed"], "unknown config 'reversed'"),
        (None, None, ["--seed", "3"], "--seed needs --source generate"),
    ],
)
def test_bad_input_fails_in_one_line_and_writes_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, file, damage, extra_args, message
) -> None:
    if damage is not None:
        damage(data_dir / file)
    output = tmp_path / "out" / "reversal-exp3"
    assert exp3.main(["--data-dir", str(data_dir), "--output", str(output), *extra_args]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert not output.parent.exists() or not any(output.parent.iterdir())


# ---------------------------------------------------------------- the leak check


@pytest.mark.parametrize("kind", [None, "word", "entity", "segment", "token"])
def test_the_built_data_passes_the_leak_check_as_written_and_transformed(exp3_dataset_dir: Path, kind: str | None):
    leak_check.check_folder(exp3_dataset_dir, "exp3", kind, seed=3)


@pytest.mark.parametrize("kind", [None, "entity"])
def test_a_test_query_in_a_training_document_is_caught(exp3_dataset_dir: Path, kind: str | None) -> None:
    """Planted in one config's training split, as written (plain check) or written reversed with the question kept
    whole: the `entity` check finds it transformed, and as written in the reversed row that training adds."""
    from reversal_hf.data.reversal.text import TextReversal

    splits = leak_check.read_splits(exp3_dataset_dir)
    config = exp3.CONFIGS[1]
    query = splits[(config, "test")][0]
    planted = query["prompt"]
    if kind == "entity":
        planted = TextReversal("entity").apply(planted, [query["question"]])
    train = splits[(config, "train")]
    splits[(config, "train")] = [*train, {**train[0], "completion": train[0]["completion"] + "\n" + planted}]
    leaks = leak_check.find_leaks("exp3", splits, kind)
    expected = [f"{config}/test prompt {query['prompt']!r} is in a training split"]
    if kind == "entity":
        expected.append(f"{config}:entity/test prompt {planted!r} is in a training split")
        assert leak_check.find_leaks("exp3", splits) == []  # written reversed, no test query to the plain check
    assert leaks == expected


def test_a_folder_without_exp3_splits_or_an_exp1_transform_is_a_one_line_error(
    tmp_path: Path, exp3_dataset_dir: Path
) -> None:
    with pytest.raises(exp3.DatasetBuildError, match=f"no Experiment 3 splits under {tmp_path}/data"):
        leak_check.check_folder(tmp_path, "exp3")
    with pytest.raises(ValueError, match="reversal_transform: 'both_orders' does not apply to Experiment 3"):
        leak_check.check_folder(exp3_dataset_dir, "exp3", "both_orders")
