"""Nothing silently wrong (issue 19): no token in anything written, uploaded or printed; scores that name the weights
they scored; a rerun resumes only the run it would have trained; killing the launcher stops its jobs; nonsense
hyperparameters and broken model folders or output paths are one `error:` line, with nothing half-written.

Training runs go through subprocesses with one torch thread, as in tests/test_train.py; checks that fail before any
model loads run in this process.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_train import ENV, KILL_AFTER_SAVE, _overrides

from reversal_hf import launch, run_folder
from reversal_hf.configs import load_recipe
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.loading import load_model_and_tokenizer
from reversal_hf.evaluation.run import RunArguments, evaluate_run
from reversal_hf.paths import REPO_ROOT
from reversal_hf.reporting.runs import ReportInputError, load_run
from reversal_hf.train import TrainError, resolve_model_path, run, training_lock

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PLANTED_HF_TOKEN = "hf_PlantedTokenThatMustNeverLeave0123"
PLANTED_OPENAI_KEY = "sk-planted-openai-key-never-written-4567"
CLI = [sys.executable, "-m", "reversal_hf.cli"]


def _cli(args: list[str], env: dict[str, str] = ENV) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=600, cwd=REPO_ROOT)


def _error_line(result: subprocess.CompletedProcess | str) -> str:
    """The one `error:` line a refused command printed (and that it printed exactly one)."""
    text = result if isinstance(result, str) else result.stderr
    errors = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in text, text[-3000:]
    return errors[0]


def _without_token(env: dict[str, str], home: Path) -> dict[str, str]:
    return {key: value for key, value in env.items() if key != "HF_TOKEN"} | {"HF_HOME": str(home)}


@pytest.fixture(scope="module")
def planted_hub():
    """The test Hub, accepting only the planted token."""
    from hub_server import HubServer

    with HubServer(token=PLANTED_HF_TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def pushed_run(planted_hub, tmp_path_factory, exp1_dataset_dir: Path, tiny_model_dir: Path):
    """A tiny run given the planted token only as `--hub_token` (with the OpenAI key in its environment), dry-run
    first, pushed by training and again by `push-model`: (run folder, every file under its temp root, the
    command outputs)."""
    root = tmp_path_factory.mktemp("secrets")
    env = _without_token(ENV | planted_hub.client_env(str(root / "home")), root / "home")
    env["OPENAI_API_KEY"] = PLANTED_OPENAI_KEY
    output_dir = root / "run"
    overrides = [
        *_overrides(exp1_dataset_dir, tiny_model_dir, output_dir),
        *("--push_to_hub", "--hub_model_id", "reversal-tester/secret-train", "--hub_token", PLANTED_HF_TOKEN),
    ]
    dry_run = _cli(["train", "exp1_tiny", "--dry-run", "--", *overrides], env)
    trained = _cli(["train", "exp1_tiny", "--", *overrides], env)
    pushed = _cli(
        ["push-model", str(output_dir), "--repo-id", "reversal-tester/secret-push"],
        env | {"HF_TOKEN": PLANTED_HF_TOKEN},
    )
    for result in (dry_run, trained, pushed):
        assert result.returncode == 0, result.stderr[-3000:]
    return output_dir, root, [dry_run, trained, pushed]


def test_no_token_in_any_file_written_uploaded_or_printed(pushed_run, planted_hub):
    output_dir, root, results = pushed_run
    written = {str(path): path.read_bytes() for path in root.rglob("*") if path.is_file()}
    uploaded = {
        f"{repo}:{path}": data
        for repo in ("reversal-tester/secret-train", "reversal-tester/secret-push")
        for path, data in planted_hub.files(repo, repo_type="model").items()
    }
    printed = {f"output of {' '.join(r.args[3:5])}": (r.stdout + r.stderr).encode() for r in results}
    assert "reversal-tester/secret-train:training_args.bin" in uploaded, "the saved arguments were not uploaded"
    assert any(str(output_dir) in path for path in written)
    secrets = (PLANTED_HF_TOKEN.encode(), PLANTED_OPENAI_KEY.encode())
    leaks = [where for where, data in {**written, **uploaded, **printed}.items() if any(s in data for s in secrets)]
    assert not leaks


def test_retraining_removes_old_scores_and_the_report_refuses_stale_ones(
    pushed_run, exp1_dataset_dir: Path, tiny_model_dir: Path, tmp_path: Path
):
    """The evaluation records the run id it scored; a new run into the folder removes `eval/` and gets a new id, so
    the old metrics put back are refused by the report."""
    run_dir = shutil.copytree(pushed_run[0], tmp_path / "run")
    evaluate_run(run_dir, RunArguments(max_examples_per_split=2, batch_size=8))
    first = run_folder.read_run_info(run_dir)
    old_metrics = run_folder.read_metrics(run_dir, "exp1")
    assert old_metrics[run_folder.RUN_ID] == first[run_folder.RUN_ID] and load_run(run_dir).metrics["exp1"]

    result = _cli(["train", "exp1_tiny", "--", *_overrides(exp1_dataset_dir, tiny_model_dir, run_dir), "--seed", "1"])
    assert result.returncode == 0, result.stderr[-3000:]
    second = run_folder.read_run_info(run_dir)
    assert second[run_folder.RUN_ID] != first[run_folder.RUN_ID]
    assert not run_folder.eval_dir(run_dir).exists(), "a new run keeps the scores of the weights it replaced"

    run_folder.write_metrics(run_dir, "exp1", old_metrics)
    with pytest.raises(ReportInputError, match=r"exp1_metrics.json: scores run .* rerun `reversal-hf eval run"):
        load_run(run_dir)


def test_metrics_without_run_ids_are_read_as_before(tmp_path: Path):
    """Committed result folders (no weights, no run ids) stay readable."""
    committed = sorted(REPO_ROOT.glob("results/*/runs/*/run_info.json"))
    assert committed and all(load_run(path.parent).metrics for path in committed[:3])
    folder = tmp_path / "run"
    run_folder.write_run_info(folder, {"recipe": "r", "seed": 0, run_folder.RUN_ID: "a"})
    run_folder.write_metrics(folder, "exp3", {"experiment": "exp3", "exact_match": {"c/test": {"accuracy": 0.5}}})
    assert load_run(folder).metrics["exp3"]


def test_a_rerun_with_other_settings_does_not_resume(exp1_dataset_dir: Path, tiny_model_dir: Path, tmp_path: Path):
    """Killed after checkpoint-2 (its lock left behind, taken over as stale), rerun with another seed and learning
    rate: refused with one line naming both, the checkpoint kept."""
    output_dir = tmp_path / "killed"
    overrides = _overrides(exp1_dataset_dir, tiny_model_dir, output_dir)
    killed = subprocess.run(
        [sys.executable, "-c", KILL_AFTER_SAVE, "2", "exp1_tiny", *overrides], env=ENV, capture_output=True, text=True
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert (output_dir / run_folder.TRAIN_LOCK).is_file(), "the killed run's lock is what the rerun must take over"

    refused = _cli(["train", "exp1_tiny", "--", *overrides, "--seed", "1", "--learning_rate", "1e-3"])
    assert refused.returncode == 1
    error = _error_line(refused)
    assert "checkpoint-2" in error and "seed 0 -> 1" in error and "learning_rate" in error and "start fresh" in error
    assert (output_dir / "checkpoint-2").is_dir() and not run_folder.is_finished(output_dir)
    assert not (output_dir / run_folder.TRAIN_LOCK).exists(), "a refused run leaves the lock behind"


def test_a_second_run_into_a_locked_folder_is_refused(exp1_dataset_dir: Path, tiny_model_dir: Path, tmp_path: Path):
    output_dir = tmp_path / "locked"
    output_dir.mkdir()
    lock = output_dir / run_folder.TRAIN_LOCK
    lock.write_text(f"{os.getpid()} {socket.gethostname()}")  # a live process: this one
    with pytest.raises(TrainError, match="in use by the run in"):
        run(load_recipe("exp1_tiny", _overrides(exp1_dataset_dir, tiny_model_dir, output_dir)))
    assert lock.read_text().startswith(str(os.getpid())) and not list(output_dir.glob("checkpoint-*"))


def test_a_stale_lock_is_taken_over_and_released(tmp_path: Path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock = tmp_path / run_folder.TRAIN_LOCK
    lock.write_text(f"{gone.pid} {socket.gethostname()}")
    with training_lock(tmp_path, holder=True):
        assert lock.read_text().split()[0] == str(os.getpid())
    assert not lock.exists()


def _descendants(pid: int) -> set[int]:
    """Every live process below `pid` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_stops_every_process_it_started(
    signum: int, exp1_dataset_dir: Path, tiny_model_dir: Path, tmp_path: Path
):
    """`reversal-hf train` is signalled once its job trains (a checkpoint exists): it exits, and so do `accelerate
    launch` and `sft.py`. The launcher starts with SIGINT ignored, as a shell's background job (`cmd &`) does, and
    its job must still stop on a forwarded SIGINT. Only processes this test started are signalled; survivors are
    killed at the end."""
    overrides = [*_overrides(exp1_dataset_dir, tiny_model_dir, tmp_path / "run"), "--max_steps", "100000"]
    launcher = subprocess.Popen(
        [*CLI, "train", "exp1_tiny", "--", *overrides],
        env=ENV,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "run").glob("checkpoint-*/trainer_state.json")):
            assert launcher.poll() is None and time.monotonic() < deadline, "the job never started training"
            time.sleep(0.5)
        children = _descendants(launcher.pid)
        assert len(children) >= 2, "expected accelerate launch and its training process"
        launcher.send_signal(signum)
        assert launcher.wait(timeout=120) != 0
        deadline = time.monotonic() + 30
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [pid for pid in children if _alive(pid)], "processes left training after the launcher exited"
    finally:
        for pid in [launcher.pid, *children]:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["--num_train_epochs", "0"], "num_train_epochs"),
        (["--num_train_epochs", "-1"], "num_train_epochs"),
        (["--max_steps", "-2"], "max_steps"),
        (["--learning_rate", "0"], "learning_rate"),
        (["--learning_rate", "-1e-3"], "learning_rate"),
    ],
)
def test_nonsense_hyperparameters_are_refused_by_the_launcher(overrides: list[str], field: str, capsys):
    assert launch.main(["exp1_tiny", "--dry-run", "--", *overrides]) == 1
    assert field in _error_line(capsys.readouterr().err)


def test_a_list_where_a_number_belongs_is_refused(tmp_path: Path, capsys):
    recipe = tmp_path / "grid_pasted.yaml"
    recipe.write_text("base: exp1_tiny\nlearning_rate: [1.0e-3, 1.0e-4]\n")
    assert launch.main([str(recipe), "--dry-run"]) == 1
    assert "learning_rate: a number, got [0.001, 0.0001]" in _error_line(capsys.readouterr().err)


@pytest.fixture(params=["truncated model.safetensors", "no tokenizer_config.json", "no tokenizer.json"])
def broken_model(request, tiny_model_dir: Path, tmp_path: Path) -> tuple[Path, str]:
    """A copy of the tiny model with one file broken, and that file's name."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    name = request.param.split()[-1]
    if request.param.startswith("truncated"):
        weights = folder / name
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    else:
        (folder / name).unlink()
    return folder, name


def test_a_broken_model_folder_is_one_line(broken_model, exp1_dataset_dir: Path, capsys):
    folder, name = broken_model
    with pytest.raises(EvaluationError, match=name) as raised:
        load_model_and_tokenizer(folder, "cpu")
    assert "\n" not in str(raised.value)
    with pytest.raises(TrainError, match=name):
        resolve_model_path(str(folder))
    overrides = ["--model_name_or_path", str(folder), "--dataset_name", str(exp1_dataset_dir)]
    assert launch.main(["exp1_tiny", "--dry-run", "--", *overrides]) == 1
    assert name in _error_line(capsys.readouterr().err)


def test_push_model_without_a_token_or_with_a_bad_repo_id(tmp_path: Path):
    """One line each, before anything is written (no README.md in the folder)."""
    run_dir = tmp_path / "run"
    run_folder.write_run_info(run_dir, {"recipe": "exp1_tiny", "experiment": "exp1", "training_mode": "full"})
    env = _without_token(ENV, tmp_path / "home") | {"HF_HUB_OFFLINE": "0"}
    no_token = _cli(["push-model", str(run_dir), "--repo-id", "someone/model"], env)
    assert no_token.returncode == 1 and "HF_TOKEN" in _error_line(no_token)
    bad_id = _cli(["push-model", str(run_dir), "--repo-id", "not a/repo//id"], env | {"HF_TOKEN": "hf_x"})
    assert bad_id.returncode == 1 and "--repo-id 'not a/repo//id'" in _error_line(bad_id)
    assert sorted(path.name for path in run_dir.iterdir()) == [run_folder.RUN_INFO]


def _unusable_output_paths(tmp_path: Path) -> dict[str, Path]:
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    return {"is a file": a_file, "cannot be created": a_file / "run", "cannot write in /proc": Path("/proc/run")}


def test_train_refuses_an_output_path_it_cannot_write(
    exp1_dataset_dir: Path, tiny_model_dir: Path, tmp_path: Path, capsys
):
    for message, output_dir in _unusable_output_paths(tmp_path).items():
        overrides = _overrides(exp1_dataset_dir, tiny_model_dir, output_dir)
        assert launch.main(["exp1_tiny", "--dry-run", "--", *overrides]) == 1
        assert message in _error_line(capsys.readouterr().err)
        with pytest.raises(TrainError, match=message):  # the job itself, started without the launcher
            run(load_recipe("exp1_tiny", overrides))
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_eval_refuses_an_output_path_it_cannot_write(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_folder.write_run_info(run_dir, {"experiment": "exp1", "dataset": {"name": "build/datasets/reversal-exp1"}})
    (run_dir / "eval").write_text("a file where eval/ goes")
    with pytest.raises(EvaluationError, match="eval: is a file"):
        evaluate_run(run_dir)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_eval_refuses_a_read_only_run_folder(tmp_path: Path):
    run_dir = tmp_path / "run"
    run_folder.write_run_info(run_dir, {"experiment": "exp1", "dataset": {"name": "build/datasets/reversal-exp1"}})
    run_dir.chmod(0o555)
    try:
        with pytest.raises(EvaluationError, match="cannot write in"):
            evaluate_run(run_dir)
    finally:
        run_dir.chmod(0o755)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (["--dataset_name", "someone/reversal-exp1"], "someone/reversal-exp1 is a Hub dataset"),
        (["--model_name_or_path", "someone/some-model"], "someone/some-model is a Hub model"),
    ],
)
def test_a_dry_run_says_when_it_did_not_check_document_lengths(overrides: list[str], reason: str, capsys):
    assert launch.main(["exp1_tiny", "--dry-run", "--", *overrides, "--max_length", "16"]) == 0
    note = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert note == [f"note: exp1_tiny: document lengths not checked here ({reason}); the job checks them at start-up"]
