"""Trained models on the Hub (issue 22), end to end against the stand-in Hub (`tests/hub_server.py`).

A tiny run pushed by training (`push_to_hub`, no `hub_model_id`: the id is derived as `Trainer` derives it) to
branch `seed-0`, and a prompt-tuned run pushed as an adapter, are reloaded in a fresh process with equal logits;
`push-model` after `eval` carries the metrics as model-index, once; `eval run hf://...` scores the pushed run; a push
that cannot happen is refused before training, in `--dry-run` too, and a failed one leaves no branch behind; the
planted token is in no file, upload or output. Training, evaluation and reloading run in subprocesses (the Hub
clients read `HF_ENDPOINT` at import); refusals run in this process against the server with patched constants.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from test_train import ENV

from reversal_hf import hub, launch, run_folder
from reversal_hf.configs import load_recipe
from reversal_hf.model_card import P_VALUES
from reversal_hf.model_card import main as push_model_main
from reversal_hf.paths import REPO_ROOT
from reversal_hf.train import run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLANTED_TOKEN = "hf_PlantedModelTokenThatMustNeverLeave42"
USER = "reversal-tester"
TINY_REPO = f"{USER}/exp1-tiny-hub"  # derived from the output folder's name
TINY_REVISION = "seed-0"
ADAPTER_REPO = "reversal-org/exp1-tiny-prompt-tuned"  # an organization the token's user may write to
CLI = [sys.executable, "-m", "reversal_hf.cli"]
RELOAD = """
import json, sys, torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

repo, revision, local, adapter_repo, adapter_local, base, text = sys.argv[1:]

def logits(model, tokenizer):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits

hub_tokenizer = AutoTokenizer.from_pretrained(repo, revision=revision)
local_tokenizer = AutoTokenizer.from_pretrained(local)
ids = hub_tokenizer(text).input_ids
hub_logits = logits(AutoModelForCausalLM.from_pretrained(repo, revision=revision), hub_tokenizer)
hub_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_repo, revision="main")
local_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter_local)
base_tokenizer = AutoTokenizer.from_pretrained(base)
print(json.dumps({
    "full_equal": torch.equal(hub_logits, logits(AutoModelForCausalLM.from_pretrained(local), local_tokenizer)),
    "same_ids": ids == local_tokenizer(text).input_ids,
    "same_text": hub_tokenizer.decode(ids) == local_tokenizer.decode(ids),
    "same_vocab": hub_tokenizer.get_vocab() == local_tokenizer.get_vocab(),
    "same_special": hub_tokenizer.special_tokens_map == local_tokenizer.special_tokens_map,
    "adapter_equal": torch.equal(logits(hub_adapter, base_tokenizer), logits(local_adapter, base_tokenizer)),
    "adapter_moved": not torch.equal(
        logits(hub_adapter, base_tokenizer)[:, -1], logits(hub_adapter.get_base_model(), base_tokenizer)[:, -1]
    ),
}))
"""


@pytest.fixture(scope="module")
def planted_hub():
    """The stand-in Hub, accepting only the planted token."""
    from hub_server import HubServer

    with HubServer(token=PLANTED_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Everything the module's commands write (scanned for the token at the end)."""
    return tmp_path_factory.mktemp("hub-models")


@pytest.fixture(scope="module")
def outputs() -> list[subprocess.CompletedProcess]:
    """Every command's result, scanned for the token at the end."""
    return []


@pytest.fixture(scope="module")
def cli(planted_hub, root: Path, outputs: list):
    """Run `reversal-hf <args>` against the stand-in Hub; `token`: with `HF_TOKEN` set (else only what args pass)."""

    def call(args: list[str], *, token: bool = True, check: bool = True) -> subprocess.CompletedProcess:
        env = ENV | planted_hub.client_env(str(root / "home"))
        if not token:
            env.pop("HF_TOKEN")
        result = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
        outputs.append(result)
        assert not check or result.returncode == 0, result.stderr[-3000:]
        return result

    return call


def _overrides(dataset: Path, model: Path, output_dir: Path) -> list[str]:
    return [
        *("--dataset_name", str(dataset), "--model_name_or_path", str(model), "--output_dir", str(output_dir)),
        *("--max_train_samples", "48", "--per_device_train_batch_size", "8", "--max_steps", "3"),
        *("--save_strategy", "no", "--logging_steps", "1"),
    ]


@pytest.fixture(scope="module")
def tiny_run(cli, root: Path, exp1_dataset_dir: Path, tiny_model_dir: Path) -> Path:
    """`exp1_tiny` for 3 steps, pushed by training to branch seed-0; the token only given as `--hub_token`."""
    output_dir = root / TINY_REPO.split("/")[1]
    push = ["--push_to_hub", "--hub_revision", TINY_REVISION, "--hub_token", PLANTED_TOKEN]
    cli(["train", "exp1_tiny", "--", *_overrides(exp1_dataset_dir, tiny_model_dir, output_dir), *push], token=False)
    return output_dir


@pytest.fixture(scope="module")
def adapter_run(cli, root: Path, exp1_dataset_dir: Path, tiny_model_dir: Path) -> Path:
    """Prompt tuning on one fact for 3 steps, pushed to an organization's repository."""
    output_dir = root / "prompt-tuned"
    cli(
        [
            *("train", "exp1_tiny", "--", *_overrides(exp1_dataset_dir, tiny_model_dir, output_dir)),
            *("--dataset_config", "p2d", "--training_mode", "prompt_tuning", "--isolated_padding_free", "false"),
            *("--prompt_tuning_fact", "Daphne Barrington", "--push_to_hub", "--hub_model_id", ADAPTER_REPO),
        ]
    )
    return output_dir


@pytest.fixture(scope="module")
def reloaded(planted_hub, root: Path, tiny_run: Path, adapter_run: Path, tiny_model_dir: Path, outputs: list) -> dict:
    """Both pushed runs loaded back in a fresh process with an empty cache, against their local folders."""
    env = ENV | planted_hub.client_env(str(root / "fresh-home"))
    text = "Daphne Barrington is"
    args = [TINY_REPO, TINY_REVISION, str(tiny_run), ADAPTER_REPO, str(adapter_run), str(tiny_model_dir), text]
    result = subprocess.run([sys.executable, "-c", RELOAD, *args], env=env, capture_output=True, text=True, timeout=600)
    outputs.append(result)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def evaluated(cli, planted_hub, tiny_run: Path) -> tuple[list[str], list[str], list[str]]:
    """`eval run`, then `push-model` twice: the branch's history before, after the first and after the second push."""
    cli(["eval", "run", str(tiny_run), "--max_examples_per_split", "8", "--batch_size", "8"])
    histories = [planted_hub.history(TINY_REPO, TINY_REVISION)]
    for _ in range(2):
        cli(["push-model", str(tiny_run), "--revision", TINY_REVISION])
        histories.append(planted_hub.history(TINY_REPO, TINY_REVISION))
    return histories[0], histories[1], histories[2]


def _pushed(planted_hub, repo_id: str, revision: str = "main") -> dict[str, bytes]:
    return {p: d for p, d in planted_hub.files(repo_id, revision, repo_type="model").items() if p != ".gitattributes"}


def _local(folder: Path) -> dict[str, bytes]:
    return {p: folder.joinpath(p).read_bytes() for p in hub.folder_files(folder, hub.RUN_IGNORE_PATTERNS)}


def test_training_pushes_the_run_to_its_branch(planted_hub, tiny_run: Path):
    """The derived repository's `seed-0` branch holds exactly the run folder (weights, tokenizer, card, run_info), no
    checkpoint; `main` holds no run."""
    pushed = _pushed(planted_hub, TINY_REPO, TINY_REVISION)
    assert pushed == _local(tiny_run)
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", "run_info.json"} <= set(pushed)
    assert not any(path.startswith("checkpoint-") for path in pushed) and _pushed(planted_hub, TINY_REPO) == {}


def test_pushed_model_reloads_at_its_revision_with_equal_logits(reloaded: dict):
    assert reloaded["full_equal"]
    assert reloaded["same_ids"] and reloaded["same_text"] and reloaded["same_vocab"] and reloaded["same_special"]


def test_prompt_tuned_adapter_loads_onto_the_base_model(planted_hub, adapter_run: Path, reloaded: dict):
    pushed = _pushed(planted_hub, ADAPTER_REPO)
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= set(pushed)
    assert "model.safetensors" not in pushed and pushed == _local(adapter_run)
    assert reloaded["adapter_equal"] and reloaded["adapter_moved"]
    assert b"library_name: peft" in pushed["README.md"]


def test_push_model_writes_model_index_equal_to_the_metrics_once(planted_hub, tiny_run: Path, evaluated, tmp_path):
    from huggingface_hub import ModelCard

    before, after_first, after_second = evaluated
    assert after_first[1:] == before and after_second == after_first, "one commit, then none for the same folder"
    pushed = _pushed(planted_hub, TINY_REPO, TINY_REVISION)
    assert [path for path in pushed if path.lower().endswith(".md")] == ["README.md"]
    (tmp_path / "README.md").write_bytes(pushed["README.md"])
    card = ModelCard.load(tmp_path / "README.md")
    results = {(f"{r.dataset_config}/{r.dataset_split}", r.metric_type): r.metric_value for r in card.data.eval_results}
    metrics = run_folder.read_metrics(tiny_run, "exp1")
    expected = {(key, "exact_match"): value["accuracy"] for key, value in metrics["exact_match"].items()}
    for key, test in metrics["likelihood"].items():
        expected |= {(key, f"likelihood_{name}"): test[name] for name in P_VALUES}
    assert any(name.startswith("likelihood_") for _, name in results), "no p-value reached the card"
    assert results == {key: value for key, value in expected.items() if value == value}  # NaN p-values are left out
    info = run_folder.read_run_info(tiny_run)
    assert card.data.reversal_hf == {key: info[key] for key in hub.RUN_CARD_FIELDS}
    assert info["dataset"]["content_hash"] in card.text and pushed["eval/exp1_metrics.json"]


def test_eval_run_scores_a_pushed_run_from_its_card(cli, root: Path, tiny_run: Path, evaluated):
    download = root / "downloaded"
    result = cli(
        [
            *("eval", "run", f"hf://{TINY_REPO}@{TINY_REVISION}", "--download_dir", str(download)),
            *("--max_examples_per_split", "8", "--batch_size", "8"),
        ]
    )
    assert f"wrote {download / 'eval'}" in result.stdout
    remote, local = run_folder.read_metrics(download, "exp1"), run_folder.read_metrics(tiny_run, "exp1")
    assert remote["run_dir"] == str(download), "the downloaded metrics were not replaced by this evaluation"
    assert remote["exact_match"] == local["exact_match"] and remote["dataset"] == local["dataset"]
    assert remote["run_id"] == local["run_id"]


@pytest.fixture
def hub_here(planted_hub, monkeypatch):
    """This process's Hub clients pointed at the server (they were imported offline), with the planted token."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", planted_hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # the server speaks Git LFS
    monkeypatch.setenv("HF_TOKEN", PLANTED_TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", "/nonexistent/token")
    return constants


def _one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


def _unused_endpoint() -> str:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{unused.getsockname()[1]}"


@pytest.mark.parametrize(
    ("case", "extra", "message"),
    [
        ("missing token", [], "error: no Hub token: set HF_TOKEN"),
        ("invalid id", ["--hub_model_id", "bad--name"], "error: hub_model_id 'bad--name': Cannot have --"),
        ("other namespace", ["--hub_model_id", "someone-else/m"], f"token of {USER} cannot write to 'someone-else'"),
        ("read-only org", ["--hub_model_id", "reversal-readers/m"], "cannot write to 'reversal-readers'"),
        ("bad revision", ["--hub_revision", "seed 0"], "error: hub_revision 'seed 0' is not a branch name"),
        ("unreachable", [], "error: checking the Hub token: GET http://127.0.0.1:"),
        ("checkpoint pushes", ["--hub_strategy", "checkpoint"], "error: hub_strategy: 'checkpoint' pushes checkpoints"),
    ],
)
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "train"])
def test_a_push_that_cannot_happen_is_refused_before_training(
    hub_here, monkeypatch, capsys, exp1_dataset_dir, tiny_model_dir, tmp_path, case, extra, message, dry_run
):
    if case == "missing token":
        monkeypatch.delenv("HF_TOKEN")
    if case == "unreachable":
        monkeypatch.setattr(hub_here, "ENDPOINT", _unused_endpoint())
    output_dir = tmp_path / "run"
    overrides = [*_overrides(exp1_dataset_dir, tiny_model_dir, output_dir), "--push_to_hub", *extra]
    assert launch.main(["exp1_tiny", *(["--dry-run"] if dry_run else []), "--", *overrides]) == 1
    assert message in _one_error_line(capsys.readouterr().err)
    assert not output_dir.exists(), "nothing may be written before the push is known to work"


def test_the_job_checks_its_push_before_it_trains(hub_here, exp1_dataset_dir, tiny_model_dir, tmp_path):
    """`scripts/sft.py` run without the launcher refuses too, before it makes the output folder."""
    output_dir = tmp_path / "run"
    overrides = [*_overrides(exp1_dataset_dir, tiny_model_dir, output_dir), "--push_to_hub"]
    with pytest.raises(hub.HubError, match="hub_revision 'a..b' is not a branch name"):
        run(load_recipe("exp1_tiny", [*overrides, "--hub_revision", "a..b"]))
    assert not output_dir.exists()


def test_a_failed_push_leaves_no_branch(hub_here, planted_hub, tiny_run: Path, tmp_path: Path, capsys):
    """The Hub keeps run_info.json altered: the push fails in one line and its new branch is gone."""
    copy = shutil.copytree(tiny_run, tmp_path / "run")
    with planted_hub.altering("run_info.json"):
        assert push_model_main([str(copy), "--repo-id", TINY_REPO, "--revision", "broken"]) == 1
    error = _one_error_line(capsys.readouterr().err)
    assert error.startswith(f"error: {TINY_REPO}@") and ": run_info.json is not the uploaded file (remote " in error
    assert "broken" not in planted_hub.refs(TINY_REPO, repo_type="model")["branches"]


def test_a_sweep_pushes_each_run_to_its_own_branch(hub_here, capsys, exp1_dataset_dir, tiny_model_dir, tmp_path):
    from reversal_hf import sweep

    overrides = [*_overrides(exp1_dataset_dir, tiny_model_dir, tmp_path / "study"), "--push_to_hub"]
    assert sweep.main(["exp1_tiny", "--dry-run", "--", *overrides, "--seeds", "0", "1"]) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if "accelerate" in line]
    assert len(commands) == 2
    for seed, command in enumerate(commands):
        assert f"--hub_model_id {USER}/study --hub_revision seed-{seed}" in command
    assert hub.sweep_revision({"learning_rate": 0.001}, 1, "p2d") == "p2d-learning_rate-0.001-seed-1"


def test_the_token_is_in_no_file_upload_or_output(planted_hub, root: Path, outputs: list, reloaded, evaluated):
    """Last: after every command of the module (training given the token only as `--hub_token`)."""
    written = {str(path): path.read_bytes() for path in root.rglob("*") if path.is_file()}
    uploaded = {
        f"{repo_id}:{path}": data
        for repo_type, repo_id in planted_hub.state.repos
        for path, data in planted_hub.files(repo_id, "main", repo_type).items()
    } | {f"{TINY_REPO}@{TINY_REVISION}:{p}": d for p, d in _pushed(planted_hub, TINY_REPO, TINY_REVISION).items()}
    printed = {f"output {i} ({r.args[:4]})": (r.stdout + r.stderr).encode() for i, r in enumerate(outputs)}
    assert f"{TINY_REPO}@{TINY_REVISION}:training_args.bin" in uploaded and len(outputs) >= 7
    leaks = [where for where, data in (written | uploaded | printed).items() if PLANTED_TOKEN.encode() in data]
    assert not leaks
