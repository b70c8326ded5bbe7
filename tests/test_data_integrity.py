"""A run trains and is scored on exactly the rows its dataset's content hash names.

`load_dataset(<folder>, <config>)` caches a local folder under its name and card, so a second build in a folder of the
same name used to get the first one's rows, and a shard changed or cut after the build went unnoticed. Every local
load now reads the build's own shard bytes, checked against `build_info.json`: these tests build two folders named
`reversal-exp1`, and corrupt a copy of the paper build, with the `datasets` cache warm (the folder loaded through
`load_dataset` before the change) and cold.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reversal_hf import evaluation, launch, run_folder, train
from reversal_hf.configs import load_recipe
from reversal_hf.data import exp1
from reversal_hf.data.hub_layout import LocalDatasetError
from reversal_hf.evaluation.data import Exp1Data
from reversal_hf.openai_arm.data import load_rows
from reversal_hf.openai_arm.recipe import OpenAIFinetuneArguments
from reversal_hf.paths import REPO_ROOT

TRAIN_SHARD = "data/all/train-00000-of-00001.parquet"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def generated_exp1(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh Exp 1 build (`--source generate --seed 3`), in a folder named like the paper build's."""
    output = tmp_path_factory.mktemp("a") / "reversal-exp1"
    assert exp1.main(["--source", "generate", "--seed", "3", "--output", str(output)]) == 0
    return output


@pytest.fixture
def datasets_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `datasets` cache of this test's own, so that warming it touches no other test."""
    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def _shard_column(folder: Path, config: str, split: str, column: str) -> list:
    return pq.read_table(folder / f"data/{config}/{split}-00000-of-00001.parquet")[column].to_pylist()


def test_same_named_builds_give_their_own_rows(generated_exp1: Path, exp1_dataset_dir: Path, datasets_cache: Path):
    assert generated_exp1.name == exp1_dataset_dir.name
    for folder in (exp1_dataset_dir, generated_exp1):  # each through `load_dataset` first: the cache is warm for both
        datasets.load_dataset(str(folder), "p2d", split="test")
    paper, fresh = (_shard_column(folder, "p2d", "test", "name") for folder in (exp1_dataset_dir, generated_exp1))
    assert paper[0] != fresh[0] and len(paper) == len(fresh)  # 'Daphne Barrington' vs 'Frederick Ironwood'
    for folder, names in ((exp1_dataset_dir, paper), (generated_exp1, fresh)):
        assert run_folder.load_dataset_split(str(folder), "p2d", "test")["name"] == names
        assert Exp1Data.load(str(folder), None).full["p2d/test"]["name"].tolist() == names
        recipe = load_recipe("exp1_tiny", ["--dataset_name", str(folder)], on_launcher=True)
        prompts = _shard_column(folder, "all", "train", "prompt")
        assert train.load_train_dataset(recipe)["prompt"] == prompts
        openai_args = OpenAIFinetuneArguments(dataset_name=str(folder), dataset_config="all")
        assert [row["prompt"] for row in load_rows(openai_args)] == prompts


def _change_a_row(shard: Path) -> None:
    table = pq.read_table(shard)
    names = table["name"].to_pylist()
    names[0] = "Someone Else"
    pq.write_table(table.set_column(table.schema.get_field_index("name"), "name", pa.array(names)), shard)


def _cut(shard: Path) -> None:
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])


CORRUPTIONS = {"changed_row": _change_a_row, "truncated_shard": _cut}


@pytest.fixture(params=["warm", "cold"])
def corrupted_copy(request, exp1_dataset_dir: Path, datasets_cache: Path, tmp_path: Path):
    """A copy of the paper build, loaded through `load_dataset` before the change when the cache is to be warm; the
    corruption is chosen by the test's `corruption` parameter."""
    copy = shutil.copytree(exp1_dataset_dir, tmp_path / "datasets" / "reversal-exp1")
    if request.param == "warm":
        for config in ("all", "p2d", "d2p", "both"):
            datasets.load_dataset(str(copy), config)
    CORRUPTIONS[request.getfixturevalue("corruption")](copy / TRAIN_SHARD)
    return copy


def _assert_one_line_naming(error: str, folder: Path) -> None:
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert f"{folder}: {TRAIN_SHARD} is not the file build_info.json hashed" in error


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupted_shard_stops_training_with_one_line(
    corruption: str, corrupted_copy: Path, tiny_model_dir: Path, tmp_path: Path, capsys
):
    output_dir = tmp_path / "run"
    overrides = ["--dataset_name", str(corrupted_copy), "--model_name_or_path", str(tiny_model_dir)]
    overrides += ["--output_dir", str(output_dir), "--max_steps", "1"]
    assert launch.main(["exp1_tiny", "--", *overrides]) == 1  # `reversal-hf train`: the launcher's check
    _assert_one_line_naming(capsys.readouterr().err, corrupted_copy)
    job = ["--config", str(REPO_ROOT / "recipes" / "exp1_tiny.yaml"), *overrides]
    assert train.main(job) == 1  # the job itself (scripts/sft.py), should the folder change after the launcher
    _assert_one_line_naming(capsys.readouterr().err, corrupted_copy)
    assert not output_dir.exists()


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupted_shard_stops_evaluation_with_one_line(
    corruption: str, corrupted_copy: Path, tiny_model_dir: Path, tmp_path: Path, capsys
):
    output = tmp_path / "eval-out"
    argv = ["exp1", "--model", str(tiny_model_dir), "--dataset", str(corrupted_copy), "--output", str(output)]
    assert evaluation.main([*argv, "--max-examples-per-split", "2"]) == 1
    _assert_one_line_naming(capsys.readouterr().err, corrupted_copy)
    assert not output.exists()


def test_a_build_without_shard_hashes_still_names_a_cut_shard(exp1_dataset_dir: Path, tmp_path: Path):
    """Builds from before `build_info.json` recorded each shard's hash: a cut shard is named, any change is caught."""
    copy = shutil.copytree(exp1_dataset_dir, tmp_path / "reversal-exp1")
    build_info = json.loads((copy / "build_info.json").read_text())
    del build_info["shards"]
    (copy / "build_info.json").write_text(json.dumps(build_info))
    assert len(run_folder.load_dataset_split(str(copy), "p2d", "test")) == 300
    _change_a_row(copy / "data/p2d/test-00000-of-00001.parquet")
    with pytest.raises(LocalDatasetError, match="a shard under data/ is not the one build_info.json hashed"):
        run_folder.load_dataset_split(str(copy), "p2d", "test")
    _cut(copy / TRAIN_SHARD)
    with pytest.raises(LocalDatasetError, match=f"{TRAIN_SHARD} is not a readable Parquet file"):
        run_folder.load_dataset_split(str(copy), "p2d", "test")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no_build_info", "no build_info.json: not a dataset build"),
        ("extra_shard", "data/p2d/extra-00000-of-00001.parquet is not part of the build"),
        ("missing_shard", f"{TRAIN_SHARD} is missing"),
        ("unknown_config", "no config 'p3d' (configs: p2d, d2p, both, all)"),
        ("unknown_split", "config 'p2d' has no split 'dev' (splits: train, test, reverse_test, reverse_test_rando"),
    ],
)
def test_local_folders_that_are_not_the_build_are_one_line_errors(
    change: str, message: str, exp1_dataset_dir: Path, tmp_path: Path
):
    copy = shutil.copytree(exp1_dataset_dir, tmp_path / "reversal-exp1")
    config, split = {"unknown_config": ("p3d", "test"), "unknown_split": ("p2d", "dev")}.get(change, ("p2d", "test"))
    if change == "no_build_info":
        (copy / "build_info.json").unlink()
    elif change == "extra_shard":
        shutil.copy(copy / "data/p2d/test-00000-of-00001.parquet", copy / "data/p2d/extra-00000-of-00001.parquet")
    elif change == "missing_shard":
        (copy / TRAIN_SHARD).unlink()
    with pytest.raises(LocalDatasetError, match=re.escape(message)) as raised:
        run_folder.load_dataset_split(str(copy), config, split)
    assert "\n" not in str(raised.value) and str(copy) in str(raised.value)


def test_loaded_splits_match_load_dataset_of_an_untouched_build(exp1_dataset_dir: Path, datasets_cache: Path):
    """Same rows, features, split order and a fingerprint keyed by the content hash."""
    ours = run_folder.load_dataset_split(str(exp1_dataset_dir), "p2d")
    reference = datasets.load_dataset(str(exp1_dataset_dir), "p2d")
    assert list(ours) == list(reference)
    for split in reference:
        assert ours[split].features == reference[split].features
        assert ours[split].to_list() == reference[split].to_list()
    again = run_folder.load_dataset_split(str(exp1_dataset_dir), "p2d", "test")
    assert again._fingerprint == ours["test"]._fingerprint != ours["train"]._fingerprint
