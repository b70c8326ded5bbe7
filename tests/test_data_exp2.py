"""The Experiment 2 builder and prompts: the paper's pairs and results, the Appendix C.1 prompts, bad input."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from datasets import load_dataset

from reversal_hf.data import exp2, prompts
from reversal_hf.paths import PAPER_DATA_DIR

CELEBRITY_DIR = PAPER_DATA_DIR / "celebrity_relations"


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def exp2_dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("datasets") / "reversal-exp2"
    assert exp2.main(["--source", "paper", "--output", str(output)]) == 0
    return output


def test_pairs_are_the_paper_pairs_with_both_queries(exp2_dataset_dir: Path) -> None:
    pairs = load_dataset(str(exp2_dataset_dir), "pairs", split="test")
    paper = read_csv(CELEBRITY_DIR / exp2.PAIRS_FILE)
    assert len(pairs) == len(paper) == 1513
    for row, source in zip(pairs, paper, strict=True):
        assert {k: row[k] for k in exp2.PAIR_COLUMNS} == {k: source[k] for k in exp2.PAIR_COLUMNS}
        assert row["can_reverse"] is (source["can_reverse"] == "True")
        assert row["parent_query"] == f"Who is {row['child']}'s {row['parent_type']}?"
        assert row["child_query"] == f"Name a child of {row['parent']}."


def test_paper_results_in_long_format(exp2_dataset_dir: Path) -> None:
    results = load_dataset(str(exp2_dataset_dir), "paper_results", split="test").to_pandas()
    assert results.groupby("model").size().to_dict() == dict.fromkeys(exp2.PAPER_MODELS, 1513)
    kinds = results.groupby("model")["score_kind"].unique().map(list).to_dict()
    assert kinds == {"gpt-3.5-turbo": ["accuracy"], "davinci": ["logprob"]} | dict.fromkeys(
        ("llama-7b", "llama-30b", "llama-65b"), ["logprob"]
    )
    llama = results[results.model == "llama-7b"]
    paper = read_csv(CELEBRITY_DIR / "llama-7b_reversal_test_results.csv")
    assert llama.child_score.tolist() == [float(row["llama-7b_child_logprob"]) for row in paper]
    # The paper's finding, visible in its own numbers: parents are easier to name than children.
    chat = results[results.model == "gpt-3.5-turbo"]
    assert chat.parent_score.mean() > 2 * chat.child_score.mean()


def test_prompts_are_stored_beside_the_card(exp2_dataset_dir: Path) -> None:
    stored = json.loads((exp2_dataset_dir / "prompts.json").read_text())
    assert stored["chat_messages_template"] == prompts.chat_messages("{question}")
    assert stored["completion_prompt_template"] == prompts.completion_prompt("{question}")
    card = (exp2_dataset_dir / "README.md").read_text()
    assert prompts.SYSTEM_PROMPT in card and prompts.COMPLETION_PREFIX in card


def test_prompt_builders_follow_appendix_c1() -> None:
    messages = prompts.chat_messages("Name a child of Maye Musk.")
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert messages[0]["content"].endswith('answer with "I don\'t know."')
    assert messages[-1]["content"] == "Name a child of Maye Musk."
    text = prompts.completion_prompt("Who is Malia Obama's father?")
    assert text.startswith("Below is a converation with a helpful and terse assistant.")
    assert text.endswith("\nA: Sarah Johnson\nQ: Who is Malia Obama's father?\nA:")
    assert all(f"Q: {q}\nA: {a}\n" in text for q, a in prompts.CHAT_FEW_SHOT)
    with pytest.raises(ValueError, match="parent_type"):
        prompts.parent_query("Malia Obama", "uncle")


def test_generate_draws_a_seeded_subset(tmp_path: Path) -> None:
    folders = {}
    for name, seed in (("first", 1), ("again", 1), ("other", 2)):
        folders[name] = tmp_path / name
        args = ["--source", "generate", "--num-pairs", "40", "--seed", str(seed), "--output", str(folders[name])]
        assert exp2.main(args) == 0
    files = {
        name: {p.relative_to(f): p.read_bytes() for p in f.rglob("*") if p.is_file()} for name, f in folders.items()
    }
    assert files["first"] == files["again"] != files["other"]

    pairs = load_dataset(str(folders["first"]), "pairs", split="test")
    results = load_dataset(str(folders["first"]), "paper_results", split="test")
    paper = [(row["child"], row["parent"]) for row in read_csv(CELEBRITY_DIR / exp2.PAIRS_FILE)]
    chosen = list(zip(pairs["child"], pairs["parent"], strict=True))
    assert len(chosen) == 40 and chosen == sorted(chosen, key=paper.index)
    assert list(zip(results["child"], results["parent"], strict=True)) == chosen * len(exp2.PAPER_MODELS)
    assert json.loads((folders["first"] / "build_info.json").read_text())["seed"] == 1


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A writable copy of the paper's Experiment 2 files, to break."""
    return Path(shutil.copytree(CELEBRITY_DIR, tmp_path / "celebrity_relations"))


def _replace_in(file: str, old: str, new: str):
    def damage(folder: Path) -> None:
        path = folder / file
        path.write_text(path.read_text().replace(old, new, 1))

    return damage


@pytest.mark.parametrize(
    ("damage", "extra_args", "message"),
    [
        (lambda folder: (folder / exp2.PAIRS_FILE).unlink(), [], "missing source file"),
        (lambda folder: (folder / "llama-30b_reversal_test_results.csv").unlink(), [], "llama-30b_reversal_test"),
        (_replace_in(exp2.PAIRS_FILE, ",False\n", ",maybe\n"), [], "can_reverse: expected True or False"),
        (_replace_in(exp2.PAIRS_FILE, "parent_type", "kind"), [], "missing column(s) parent_type"),
        (_replace_in("davinci_reversal_test_results.csv", "-11.2", "n/a"), [], "davinci_parent_logprob"),
        (_replace_in("llama-7b_reversal_test_results.csv", "Sasha Calle", "Sasha"), [], "pair differs"),
        (
            None,
            ["--source", "generate", "--num-pairs", "5000"],
            "too few pairs: --num-pairs 5000 but parent_child_pairs.csv has 1513",
        ),
        (None, ["--configs", "pairs", "results"], "unknown config 'results'"),
        (None, ["--num-pairs", "10"], "--num-pairs needs --source generate"),
    ],
)
def test_bad_input_fails_in_one_line_and_writes_nothing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, damage, extra_args, message
) -> None:
    if damage is not None:
        damage(data_dir)
    output = tmp_path / "out" / "reversal-exp2"
    assert exp2.main(["--data-dir", str(data_dir), "--output", str(output), *extra_args]) == 1
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
    assert not output.parent.exists() or not any(output.parent.iterdir())
