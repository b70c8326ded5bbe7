"""Publishing datasets: the real `huggingface_hub`/`datasets` upload and download code against the stand-in Hub.

Pushes and loads run in subprocesses: the Hub clients read `HF_ENDPOINT` and offline mode at import, and a fresh
process with a fresh cache is what proves that a tag, not a cache, gives back the old rows.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict

from reversal_hf import hub
from reversal_hf.data.hub_layout import CardContent, write_hub_dataset

PUSH_SCRIPT = Path(__file__).resolve().parents[1] / "datasets_scripts" / "push_dataset.py"
REPO_ID = "reversal-tester/reversal-test"


def _rows(config: str, version: str) -> dict[str, list[str]]:
    return {"prompt": [f"{config} fact {i} of {version} is" for i in range(3)], "completion": [" true"] * 3}


def _build(folder: Path, version: str, configs: tuple[str, ...]) -> Path:
    card = CardContent(pretty_name="Hub test", summary="Tiny.", how_built="By the test.", source="paper", seed=0)
    data = {
        c: DatasetDict({s: Dataset.from_dict(_rows(c, f"{version}/{s}")) for s in ("train", "test")}) for c in configs
    }
    return write_hub_dataset(folder, data, card, extra_files={"prompts.json": json.dumps({"version": version})})


def _run(args: list[str], server, home: Path) -> subprocess.CompletedProcess:
    env = os.environ | server.client_env(str(home))
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=180)


def _push(server, home: Path, folder: Path, revision: str, *flags: str, repo_id: str = REPO_ID):
    return _run([str(PUSH_SCRIPT), str(folder), "--repo-id", repo_id, "--revision", revision, *flags], server, home)


@pytest.fixture(scope="module")
def pushed_v1(hub_server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Configs `p2d` and `d2p` pushed and tagged `v1.0.0`; returns the local folder."""
    folder = _build(tmp_path_factory.mktemp("v1") / "reversal-test", "v1", ("p2d", "d2p"))
    result = _push(hub_server, tmp_path_factory.mktemp("home"), folder, "v1.0.0")
    assert result.returncode == 0, result.stderr
    return folder


def test_pushed_card_keeps_configs_license_and_citation(hub_server, pushed_v1: Path):
    files = hub_server.files(REPO_ID, "v1.0.0")
    local = {p.relative_to(pushed_v1).as_posix(): p.read_bytes() for p in pushed_v1.rglob("*") if p.is_file()}
    assert {p: b for p, b in files.items() if p != ".gitattributes"} == local, "the tag must hold the folder's bytes"
    for name in ("README.md", "build_info.json", "prompts.json"):
        assert files[name] == (pushed_v1 / name).read_bytes()
    card = files["README.md"].decode()
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["license"] == "mit"
    assert "@inproceedings{berglund2024reversal" in card
    assert json.loads(files["build_info.json"])["content_hash"] in card
    card_paths = {f["path"] for c in metadata["configs"] for f in c["data_files"]}
    assert {c["config_name"] for c in metadata["configs"]} == {"p2d", "d2p"}
    assert card_paths == {p for p in files if p.startswith("data/")}
    assert all(files[p] == (pushed_v1 / p).read_bytes() for p in card_paths)


def test_tag_keeps_old_rows_after_main_changes(hub_server, pushed_v1: Path, tmp_path: Path):
    v2 = _build(tmp_path / "v2" / "reversal-test", "v2", ("p2d", "both"))
    result = _push(hub_server, tmp_path / "push-home", v2, "v1.1.0")
    assert result.returncode == 0, result.stderr
    assert not any(p.startswith("data/d2p/") for p in hub_server.files(REPO_ID, "main")), "dropped config left behind"

    load = (
        "import json, sys, datasets\n"
        "def prompts(config, revision, split):\n"
        "    return list(datasets.load_dataset(sys.argv[1], config, revision=revision, split=split)['prompt'])\n"
        "print(json.dumps([prompts('p2d', 'v1.0.0', 'train'), prompts('p2d', 'main', 'train'),"
        " prompts('d2p', 'v1.0.0', 'test')]))\n"
    )
    result = _run(["-c", load, REPO_ID], hub_server, tmp_path / "fresh-home")
    assert result.returncode == 0, result.stderr
    tagged, main, tagged_dropped_config = json.loads(result.stdout.strip().splitlines()[-1])
    assert tagged == _rows("p2d", "v1/train")["prompt"]
    assert main == _rows("p2d", "v2/train")["prompt"]
    assert tagged_dropped_config == _rows("d2p", "v1/test")["prompt"]


def test_pushing_other_files_to_a_version_is_refused_without_force(hub_server, pushed_v1: Path, tmp_path: Path):
    refs_before = hub_server.refs(REPO_ID)
    other = _build(tmp_path / "other" / "reversal-test", "v1-edited", ("p2d", "d2p"))
    result = _push(hub_server, tmp_path, other, "v1.0.0")
    assert result.returncode == 1
    [error] = result.stderr.strip().splitlines()
    tagged = refs_before["tags"]["v1.0.0"]
    assert error.startswith(f"error: tag v1.0.0 already exists on {REPO_ID} and is not this folder ({REPO_ID}@")
    assert tagged[:8] in error and error.endswith("): use --force to move it")
    assert hub_server.refs(REPO_ID) == refs_before, "a refused push must not change the repository"


def test_a_push_that_failed_part_way_finishes_on_rerun(hub_server, tmp_path: Path):
    """`make push-data` pushes one repository after another: after a failure, running it again (no FORCE) leaves the
    tags that are right as they are, commits nothing to their repositories, and finishes the others."""
    repos = {name: f"reversal-tester/resume-{name}" for name in ("first", "second")}
    folders = {name: _build(tmp_path / name / "ds", name, ("p2d",)) for name in repos}
    home = tmp_path / "home"
    assert _push(hub_server, home, folders["first"], "v1.0.0", repo_id=repos["first"]).returncode == 0
    with hub_server.altering("prompts.json"):  # the second push does not land intact: no tag
        assert _push(hub_server, home, folders["second"], "v1.0.0", repo_id=repos["second"]).returncode == 1
    first_refs = hub_server.refs(repos["first"])
    assert hub_server.refs(repos["second"])["tags"] == {}

    for name, repo_id in repos.items():  # the rerun
        result = _push(hub_server, home, folders[name], "v1.0.0", repo_id=repo_id)
        assert result.returncode == 0, result.stderr
        assert "moving tag" not in result.stderr
    assert hub_server.refs(repos["first"]) == first_refs, "a right tag must not move, nor its branch get a commit"
    assert (
        hub_server.files(repos["second"], "v1.0.0")["prompts.json"] == (folders["second"] / "prompts.json").read_bytes()
    )


def test_force_moves_the_tag_and_says_so(hub_server, tmp_path: Path):
    repo_id = "reversal-tester/force-test"
    v1 = _build(tmp_path / "v1" / "force-test", "v1", ("p2d",))
    v2 = _build(tmp_path / "v2" / "force-test", "v2", ("p2d",))
    script = (
        "import sys\n"
        "from reversal_hf.hub import push_dataset_folder\n"
        "first = push_dataset_folder(sys.argv[1], sys.argv[3], 'v1.0.0', token=None, private=True)\n"
        "second = push_dataset_folder(sys.argv[2], sys.argv[3], 'v1.0.0', token=None, force=True)\n"
        "print(first, second)\n"
    )
    result = _run(["-c", script, str(v1), str(v2), repo_id], hub_server, tmp_path / "home")
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split()[-2:]
    assert first != second
    assert f"moving tag v1.0.0 of {repo_id} from commit {first} to {second}" in result.stderr
    assert hub_server.refs(repo_id)["tags"] == {"v1.0.0": second}
    assert hub_server.state.repos[("dataset", repo_id)].private
    assert hub_server.files(repo_id, "v1.0.0")["prompts.json"] == (v2 / "prompts.json").read_bytes()


@pytest.mark.parametrize(
    "path", ["data/p2d/train-00000-of-00001.parquet", "prompts.json"], ids=["lfs-sha256", "git-blob"]
)
def test_push_fails_when_the_hub_stores_other_bytes(hub_server, tmp_path: Path, path: str):
    """The server keeps one file with a flipped byte (same size): the push names it and creates no tag."""
    repo_id = f"reversal-tester/altered-{path.split('/')[-1].split('.')[0]}"
    folder = _build(tmp_path / "altered", "v1", ("p2d",))
    with hub_server.altering(path):
        result = _push(hub_server, tmp_path / "home", folder, "v1.0.0", repo_id=repo_id)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    kind = "sha256" if path.endswith(".parquet") else "git blob"
    assert error.startswith(f"error: {repo_id}@") and f": {path} is not the uploaded file (remote {kind} " in error
    assert hub_server.refs(repo_id)["tags"] == {}, "a push that did not land intact must not be tagged"


def test_unreachable_endpoint_is_a_one_line_error(hub_server, tmp_path: Path):
    folder = _build(tmp_path / "ds", "v1", ("p2d",))
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{unused.getsockname()[1]}"
    env = os.environ | hub_server.client_env(str(tmp_path / "home")) | {"HF_ENDPOINT": endpoint}
    args = [str(PUSH_SCRIPT), str(folder), "--repo-id", REPO_ID, "--revision", "v1.0.0"]
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 1
    [error] = result.stderr.strip().splitlines()
    assert error.startswith(f"error: POST {endpoint}/api/repos/create failed: ")


def test_shards_changed_after_the_build_are_refused(tmp_path: Path, capsys):
    folder = _build(tmp_path / "ds", "v1", ("p2d",))
    with (folder / "data/p2d/test-00000-of-00001.parquet").open("ab") as shard:
        shard.write(b"edited")
    capsys.readouterr()  # the build's progress bars
    assert hub.main([str(folder), "--repo-id", REPO_ID, "--revision", "v1.0.0"]) == 1
    assert capsys.readouterr().err.startswith(
        f"error: {folder}: data/p2d/test-00000-of-00001.parquet is not the file build_info.json hashed (sha256 "
    )


def test_push_without_token_is_a_one_line_error(tmp_path: Path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    folder = _build(tmp_path / "ds", "v1", ("p2d",))
    capsys.readouterr()  # the build's progress bars
    assert hub.main([str(folder), "--repo-id", REPO_ID, "--revision", "v9.0.0"]) == 1
    assert capsys.readouterr().err == "error: no Hub token: set HF_TOKEN\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--repo-id", "no-namespace", "--revision", "v1.0.0"],
            "--repo-id 'no-namespace' must be <user or org>/<name>",
        ),
        (
            ["--repo-id", "org/bad--name", "--revision", "v1.0.0"],
            "--repo-id 'org/bad--name': Cannot have -- or .. in repo_id: 'org/bad--name'.",
        ),
        (["--repo-id", REPO_ID, "--revision", "v1 0"], "--revision 'v1 0' is not a version tag name (e.g. v1.0.0)"),
        (["--repo-id", REPO_ID, "--revision", "main"], "--revision 'main' is not a version tag name (e.g. v1.0.0)"),
    ],
)
def test_bad_arguments_are_one_line_errors(tmp_path: Path, capsys, args: list[str], message: str):
    assert hub.main([str(tmp_path), *args]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"


def test_folder_without_card_is_refused(tmp_path: Path, capsys):
    assert hub.main([str(tmp_path), "--repo-id", REPO_ID, "--revision", "v1.0.0"]) == 1
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path}/README.md: no dataset card (is {tmp_path} a built dataset folder?)\n"
    )
