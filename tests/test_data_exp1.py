"""The Experiment 1 dataset: the reference build against the paper's files, fresh builds, the leak check, bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset

from reversal_hf.data import exp1, exp1_paper, exp1_schema, leak_check
from reversal_hf.data.leak_check import LeakError, held_out_prompt_leaks, raise_on_leaks

PAPER_FILES_DIR = exp1_paper.PAPER_EXP1_DIR / exp1_paper.PAPER_VERSION
TEMPLATES = exp1_paper.TEMPLATES_DIR


def read_split(folder: Path, config: str, split: str) -> list[dict]:
    return pq.read_table(folder / "data" / config / f"{split}-00000-of-00001.parquet").to_pylist()


def paper_rows(stem: str) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in (PAPER_FILES_DIR / f"{stem}.jsonl").read_text().splitlines()]
    return [(row["prompt"], row["completion"]) for row in rows]


def lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fresh builds: seed 0 twice, seed 1 once."""
    root = tmp_path_factory.mktemp("exp1-generated")
    folders = {"seed0": root / "seed0", "seed0-again": root / "seed0-again", "seed1": root / "seed1"}
    for key, folder in folders.items():
        seed = key.removeprefix("seed").removesuffix("-again")
        assert exp1.main(["--source", "generate", "--seed", seed, "--output", str(folder)]) == 0
    return folders


@pytest.mark.parametrize(("config", "split"), list(exp1_paper.PAPER_FILES))
def test_reference_build_reproduces_every_paper_file(exp1_dataset_dir: Path, config: str, split: str) -> None:
    rows = read_split(exp1_dataset_dir, config, split)
    assert [(row["prompt"], row["completion"]) for row in rows] == paper_rows(exp1_paper.PAPER_FILES[(config, split)])


def test_reference_annotations_follow_the_papers_template_split(exp1_dataset_dir: Path) -> None:
    names, descriptions = set(lines(TEMPLATES / "names.txt")), set(lines(TEMPLATES / "descriptions.txt"))
    facts: dict[str, tuple[str, str]] = {}
    for config, split in exp1_paper.PAPER_FILES:
        rows = read_split(exp1_dataset_dir, config, split)
        per_fact = exp1_schema.TRAIN_TEMPLATES if split == "train" else exp1_schema.HELD_OUT_TEMPLATES
        first_id = 0 if split == "train" else exp1_schema.TRAIN_TEMPLATES
        assert [row["template_id"] for row in rows] == [first_id + i % per_fact for i in range(len(rows))]
        for row in rows:
            assert row["name"] in names and row["description"] in descriptions
            assert facts.setdefault(row["name"], (row["description"], row["subset"])) == (
                row["description"],
                row["subset"],
            )
            if row["direction"] == "p2d":
                assert row["name"] in row["prompt"]
            elif "randomized" not in split and split != "validation":
                assert row["completion"].startswith(" " + row["name"])
        if config in ("p2d", "d2p"):
            assert {row["subset"] for row in rows} == {config}
            same_order = split in ("train", "test")
            assert {row["direction"] for row in rows} == {config if same_order else ({"p2d", "d2p"} - {config}).pop()}
    assert len(facts) == 90
    for config in ("p2d", "d2p"):
        true = read_split(exp1_dataset_dir, config, "reverse_test")
        randomized = read_split(exp1_dataset_dir, config, "reverse_test_randomized")
        assert [(r["prompt"], r["name"], r["description"]) for r in true] == [
            (r["prompt"], r["name"], r["description"]) for r in randomized
        ]


def test_load_dataset_works_offline(exp1_dataset_dir: Path) -> None:
    columns = ["prompt", "completion", "name", "description", "template_id", "subset", "direction"]
    for config, splits in exp1_schema.SPLITS.items():
        dataset = load_dataset(str(exp1_dataset_dir), config)
        assert sorted(dataset) == sorted(splits)
        for split in splits:
            assert dataset[split].column_names == columns
            assert dataset[split].features["template_id"].dtype == "int32"
    assert load_dataset(str(exp1_dataset_dir), "all", split="train").num_rows == 3600
    build_info = json.loads((exp1_dataset_dir / "build_info.json").read_text())
    assert build_info["source"] == "paper"
    leak_check.check_folder(exp1_dataset_dir, "exp1")


def test_generate_is_byte_identical_for_a_seed(generated: dict[str, Path]) -> None:
    files = sorted(p.relative_to(generated["seed0"]) for p in generated["seed0"].rglob("*") if p.is_file())
    assert len(files) == 14  # 12 shards, card, build_info.json
    for relative in files:
        assert (generated["seed0"] / relative).read_bytes() == (generated["seed0-again"] / relative).read_bytes()
    different = [f for f in files if (generated["seed0"] / f).read_bytes() != (generated["seed1"] / f).read_bytes()]
    assert Path("data/p2d/train-00000-of-00001.parquet") in different
    card = (generated["seed0"] / "README.md").read_text()
    assert "`random.Random(0)`" in card and "`offline` paraphraser" in card and "Templates 0–29" in card
    assert json.loads((generated["seed1"] / "build_info.json").read_text())["seed"] == 1


def test_generated_dataset_has_the_papers_shape(generated: dict[str, Path], exp1_dataset_dir: Path) -> None:
    folder = generated["seed0"]
    names = set(lines(TEMPLATES / "names.txt"))
    for config, split in exp1_paper.PAPER_FILES:
        rows, reference = read_split(folder, config, split), read_split(exp1_dataset_dir, config, split)
        assert len(rows) == len(reference)
        for key in ("template_id", "subset", "direction"):
            assert [r[key] for r in rows] == [r[key] for r in reference], (config, split, key)
        assert {r["name"] for r in rows} <= names
    for config in ("p2d", "d2p"):
        true = read_split(folder, config, "reverse_test")
        randomized = read_split(folder, config, "reverse_test_randomized")
        assert all(t["completion"] != r["completion"] for t, r in zip(true, randomized, strict=True))
        assert {r["completion"] for r in randomized} <= {t["completion"] for t in true}
    validation = read_split(folder, "all", "validation")
    assert all(row["completion"] == row["name"].split()[0] for row in validation)
    leak_check.check_folder(folder, "exp1")


def test_user_supplied_facts(tmp_path: Path) -> None:
    names = [f"Person{i} Surname{i}" for i in range(7)]
    descriptions = [f"the builder of machine number {i}" for i in range(7)]
    (tmp_path / "names.txt").write_text("\n".join(names) + "\n")
    (tmp_path / "descriptions.txt").write_text("\n".join(descriptions) + "\n")
    output = tmp_path / "out"
    argv = [
        "--source",
        "generate",
        "--names",
        str(tmp_path / "names.txt"),
        "--descriptions",
        str(tmp_path / "descriptions.txt"),
        "--facts-per-subset",
        "2",
        "--configs",
        "p2d",
        "--output",
        str(output),
    ]
    assert exp1.main(argv) == 0
    rows = read_split(output, "p2d", "train")
    assert len(rows) == 2 * exp1_schema.TRAIN_TEMPLATES and {r["name"] for r in rows} <= set(names)
    assert {r["description"] for r in rows} <= set(descriptions)
    assert sorted(p.name for p in (output / "data").iterdir()) == ["p2d"]


def test_leak_check_catches_an_injected_leak(exp1_dataset_dir: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(exp1_dataset_dir, tmp_path / "leaky")
    train_path = folder / "data" / "p2d" / "train-00000-of-00001.parquet"
    train = pq.read_table(train_path)
    leaked = pa.Table.from_pylist(read_split(folder, "p2d", "reverse_test")[:1], schema=train.schema)
    pq.write_table(pa.concat_tables([train, leaked]), train_path)
    with pytest.raises(LeakError, match=r"2 leak\(s\)"):
        leak_check.check_folder(folder, "exp1")


def test_leak_check_works_on_any_prompt_completion_rows() -> None:
    train = [{"prompt": "", "completion": "Q:  what is the capital of Atlantis? a: Poseidonia.."}]
    splits = {
        ("qa", "train"): train,
        ("qa", "test"): [{"prompt": "Q: What is the capital of Atlantis? A:", "completion": " Poseidonia"}],
        ("qa", "validation"): [{"prompt": "Q: Who founded Atlantis? A:", "completion": " Poseidon"}],
    }
    leaks = held_out_prompt_leaks(splits)
    assert leaks == ["qa/test prompt 'Q: What is the capital of Atlantis? A:' is in a training split"]
    with pytest.raises(LeakError, match=r"^1 leak\(s\) into training, first: qa/test prompt"):
        raise_on_leaks(leaks)
    assert held_out_prompt_leaks({key: rows for key, rows in splits.items() if key != ("qa", "test")}) == []


def test_a_leaking_build_fails_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    templates = lines(TEMPLATES / "p2d_templates.txt")
    templates[exp1_schema.TRAIN_TEMPLATES] = templates[0]  # a held-out template that is also a training template
    (tmp_path / "p2d.txt").write_text("\n".join(templates))
    output = tmp_path / "out"
    argv = ["--source", "generate", "--p2d-templates", str(tmp_path / "p2d.txt"), "--output", str(output)]
    assert exp1.main(argv) == 1
    assert "leak" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [tmp_path / "p2d.txt"]


def _broken_paper_dir(tmp_path: Path) -> Path:
    paper = shutil.copytree(exp1_paper.PAPER_EXP1_DIR, tmp_path / "paper")
    path = paper / exp1_paper.PAPER_VERSION / "d2p_prompts_test.jsonl"
    path.write_text(path.read_text() + '{"prompt": "no completion"}\n')
    return paper


@pytest.mark.parametrize(
    ("make_args", "message"),
    [
        (lambda tmp: ["--source", "generate", "--names", str(tmp / "missing.txt")], "cannot read name file"),
        (
            lambda tmp: ["--source", "generate", "--d2p-templates", str(tmp / "bad.txt")],
            "bad.txt:2: template has no <name> placeholder",
        ),
        (lambda tmp: ["--source", "generate", "--names", str(tmp / "few.txt")], "too few names: 5 given, 90 needed"),
        (lambda tmp: ["--source", "paper", "--configs", "p2d", "bogus"], "unknown config 'bogus'"),
        (
            lambda tmp: ["--source", "paper", "--paper-dir", str(_broken_paper_dir(tmp))],
            "d2p_prompts_test.jsonl:301: expected string fields 'prompt' and 'completion'",
        ),
    ],
    ids=["missing-file", "template-without-placeholder", "too-few-names", "unknown-config", "malformed-paper-file"],
)
def test_bad_input_is_one_line_error_and_no_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make_args, message: str
) -> None:
    (tmp_path / "bad.txt").write_text("Known for <description>, <name>.\nJust <description> here.\n")
    (tmp_path / "few.txt").write_text("\n".join(f"Name{i} Last{i}" for i in range(5)))
    output = tmp_path / "out" / "reversal-exp1"
    assert exp1.main([*make_args(tmp_path), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not output.parent.exists() or not any(output.parent.iterdir())


def test_build_script_exits_non_zero_on_bad_input(tmp_path: Path) -> None:
    script = Path(__file__).parents[1] / "datasets_scripts" / "build_exp1.py"
    argv = [sys.executable, str(script), "--source", "paper", "--configs", "nope", "--output", str(tmp_path / "out")]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == "error: unknown config 'nope' (choose from p2d, d2p, both, all)\n"
    assert not (tmp_path / "out").exists()
