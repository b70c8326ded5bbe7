"""The GPU protocol runs (`bench/gpu_protocol.py`): their plan, the bundles that carry the model to the GPU machine,
the weightless copies, the scheduler's report, deadline and `--only`, and the CPU mode end to end, so that the script
still works the day a GPU is lent."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from reversal_hf.paths import REPO_ROOT

SCRIPT = REPO_ROOT / "bench" / "gpu_protocol.py"


def load_script():
    """bench/ is no package: load the script as the module `gpu_protocol`, leaving sys.path alone."""
    spec = importlib.util.spec_from_file_location("gpu_protocol", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their class's module up while building it
    spec.loader.exec_module(module)
    return module


gpu_protocol = load_script()


def test_gpu_plan_is_the_issue_runs_in_the_study_layouts_longest_first(tmp_path: Path):
    from reversal_hf.configs import load_recipe

    jobs = gpu_protocol.plan_jobs(gpu_protocol.GPU, tmp_path)
    orders = ("answer_to_question", "question_to_answer")
    exp3 = {f"smollm2_135m/runs/exp3-{order}-seed{seed}" for order in orders for seed in range(5)}
    methods = ("baseline", "entity", "both_orders")
    exp1 = {f"smollm2_135m_mitigations/runs/{method}-seed{seed}" for method in methods for seed in range(3)}
    assert [job.run_path for job in jobs[:10]] and {job.run_path for job in jobs[:10]} == exp3, "Exp 3 first"
    assert {job.run_path for job in jobs[10:]} == exp1
    assert [job.estimate_s for job in jobs] == sorted((job.estimate_s for job in jobs), reverse=True)
    for job in (jobs[0], jobs[-1]):  # the overrides parse as the launcher parses them
        recipe = load_recipe(job.recipe, list(job.train_argv[job.train_argv.index("--") + 1 :]), on_launcher=True)
        assert recipe.launch_args.accelerate_config == "single_gpu" and recipe.training_args.use_cpu is False
        assert recipe.training_args.output_dir == str(job.work_dir) and recipe.training_args.seed == job.seed
    exp3_job = next(job for job in jobs if job.name == "exp3-question_to_answer-seed4")
    overrides = list(exp3_job.train_argv[exp3_job.train_argv.index("--") + 1 :])
    exp3_recipe = load_recipe(exp3_job.recipe, overrides, on_launcher=True)
    assert exp3_recipe.script_args.dataset_config == "question_to_answer"
    assert exp3_recipe.training_args.num_train_epochs == 20 and exp3_recipe.script_args.eval_curves
    oracle = load_recipe("exp1_smollm2_135m_both_orders", [])
    assert oracle.script_args.reversal_transform == "both_orders" and oracle.training_args.learning_rate == 5e-5
    parallel = gpu_protocol.default_parallel(jobs, cores=15)
    assert 1 <= parallel <= 15
    assert gpu_protocol.simulate(jobs, parallel, 15, gpu_protocol.HORIZON_S)[0] >= 10, "the estimate fits Exp 3"


def test_simulation_shares_cores_and_the_gpu(tmp_path: Path):
    def job(seconds: float, share: float):
        return gpu_protocol.Job("j", "s", "r", 0, tmp_path, (), (), seconds, share)

    assert gpu_protocol.simulate([job(100, 0.1)], 1, 4, 1000) == (1, 100)
    assert gpu_protocol.simulate([job(100, 0.1)] * 2, 2, 1, 1000) == (2, 200), "two jobs on one core: half speed"
    assert gpu_protocol.simulate([job(100, 0.8)] * 2, 2, 8, 150) == (0, 160), "GPU demand 1.6: 1/1.6 speed"
    assert gpu_protocol.simulate([job(100, 0.1)] * 2, 1, 8, 150) == (1, 200)


def test_bundles_fit_the_calls_and_join_back_checked(tmp_path: Path):
    assert gpu_protocol.plan_bundles([10, 25], capacity=20) == [[(0, 0, 10), (1, 0, 8)], [(1, 8, 17)]]
    files = []
    for name, size in (("small.whl", 1000), ("model.whl", 5000)):
        files.append(tmp_path / name)
        files[-1].write_bytes(os.urandom(size))
    manifest = gpu_protocol.write_bundles(files, 2500, tmp_path / "bundles", {"packed_at": "now"})
    assert manifest["bundles"] == 3 and max(manifest["bundle_bytes"]) <= 2500 and sum(manifest["bundle_bytes"]) == 6000
    device = tmp_path / "device"  # the calls carry the bundles one by one; bundle 2 has not arrived yet
    device.mkdir()
    for number in (1, 3):
        (tmp_path / "bundles" / f"bundle-{number}").rename(device / f"bundle-{number}")
    complete, missing = gpu_protocol.assemble(device, tmp_path / "wheels")
    assert [path.name for path in complete] == ["small.whl"] and missing == [2]
    (tmp_path / "bundles" / "bundle-2").rename(device / "bundle-2")
    complete, missing = gpu_protocol.assemble(device, tmp_path / "wheels")
    assert missing == [] and [path.read_bytes() for path in complete] == [path.read_bytes() for path in files]
    (tmp_path / "wheels" / "model.whl").unlink()
    piece = next(device.glob("bundle-2/model.whl.part*"))
    piece.write_bytes(bytes([piece.read_bytes()[0] ^ 1]) + piece.read_bytes()[1:])
    with pytest.raises(gpu_protocol.ProtocolError, match="SHA-256"):
        gpu_protocol.assemble(device, tmp_path / "wheels")


def make_run_folder(folder: Path, experiment: str = "exp3") -> Path:
    """A finished, evaluated run folder with everything training leaves beside it."""
    (folder / "eval").mkdir(parents=True)
    (folder / "run_info.json").write_text(json.dumps({"experiment": experiment, "train_runtime_s": 1.0}))
    metrics = {"experiment": experiment, "exact_match": {"answer_to_question/test": {"accuracy": 0.5, "n": 4}}}
    (folder / "eval" / f"{experiment}_metrics.json").write_text(json.dumps(metrics))
    (folder / "config.json").write_text("{}")
    for weights in ("model.safetensors", "training_args.bin", "tokenizer.json", "chat_template.jinja"):
        (folder / weights).write_text("x")
    for subfolder in ("checkpoint-5", "runs"):
        (folder / subfolder).mkdir()
        (folder / subfolder / "optimizer.pt").write_text("x")
    return folder


def test_copy_leaves_out_weights_and_whatever_gitignore_ignores(tmp_path: Path):
    source = make_run_folder(tmp_path / "work" / "run")
    target = tmp_path / "out" / "study" / "runs" / "run"
    gpu_protocol.copy_without_weights(source, target)
    copied = sorted(str(path.relative_to(target)) for path in target.rglob("*") if path.is_file())
    assert copied == ["config.json", "eval/exp3_metrics.json", "run_info.json"]
    left_out = sorted(str(path.relative_to(source)) for path in source.rglob("*") if path.is_file())
    check = ["git", "check-ignore", "--no-index", "-q"]
    for name in left_out:  # what git would refuse is left out, and only that
        ignored = subprocess.run([*check, f"results/s/runs/r/{name}"], cwd=REPO_ROOT).returncode == 0
        assert ignored == (name not in copied), name


def fake_job(tmp_path: Path, name: str, train: tuple[str, ...], evaluate: tuple[str, ...], estimate: float):
    return gpu_protocol.Job(name, "study", "recipe", 0, tmp_path / "work" / name, train, evaluate, estimate, 0.1)


def scheduler(tmp_path: Path, jobs: list, parallel: int, deadline_s: float):
    layout = gpu_protocol.Layout(tmp_path / "out", tmp_path / "work", tmp_path / "ship", tmp_path / "out" / "report")
    records = {job.name: {"run": job.run_path, "estimate_s": job.estimate_s, "state": "pending"} for job in jobs}
    report = {
        "mode": "test",
        "date": "today",
        "device": {"name": "CPU"},
        "versions": {},
        "plan": {"parallel": parallel, "deadline_s": deadline_s},
        "prepare": {},
        "jobs": records,
    }
    return gpu_protocol.Scheduler(jobs, layout, report, parallel, deadline_s), report


def test_scheduler_reports_after_every_job_and_copies_each_run_at_once(tmp_path: Path):
    fixture = make_run_folder(tmp_path / "fixture")
    snapshot = tmp_path / "report_while_second_ran.json"
    first = fake_job(tmp_path, "first", ("cp", "-r", str(fixture), str(tmp_path / "work" / "first")), ("true",), 30)
    second = fake_job(
        tmp_path,
        "second",
        ("cp", "-r", str(fixture), str(tmp_path / "work" / "second")),
        ("cp", str(tmp_path / "out" / "report.json"), str(snapshot)),
        20,
    )
    broken = fake_job(tmp_path, "broken", ("false",), ("true",), 10)
    runner, report = scheduler(tmp_path, [first, second, broken], parallel=1, deadline_s=600)
    runner.run()
    seen = json.loads(snapshot.read_text())["jobs"]
    assert seen["first"]["state"] == "finished" and seen["second"]["state"] == "running"
    assert {name: record["state"] for name, record in report["jobs"].items()} == {
        "first": "finished",
        "second": "finished",
        "broken": "failed",
    }
    assert report["jobs"]["broken"]["error"].startswith("train exited 1")
    assert report["jobs"]["first"]["result"]["exact_match"] == {"answer_to_question/test": 0.5}
    assert not (tmp_path / "work" / "first").exists(), "the weights are deleted once copied"
    with tarfile.open(tmp_path / "ship" / "gpu_protocol_results.tar.gz") as tar:
        names = tar.getnames()
    assert "study/runs/first/run_info.json" in names and "report.json" in names
    assert not [name for name in names if name.endswith((".safetensors", ".bin", ".pt"))]
    with tarfile.open(tmp_path / "ship" / "gpu_protocol_logs.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["broken.log", "first.log", "second.log"]
    assert len(list((tmp_path / "ship").iterdir())) <= 8, "a device call returns at most 8 files"
    table = (tmp_path / "out" / "report.md").read_text()
    assert table.count("| `study/runs/") == 3 and "train exited 1" in table


def test_no_job_starts_after_the_deadline_and_only_selects(tmp_path: Path):
    fixture = make_run_folder(tmp_path / "fixture")
    slow = fake_job(tmp_path, "slow", ("cp", "-r", str(fixture), str(tmp_path / "work" / "slow")), ("sleep", "1"), 9)
    late = fake_job(tmp_path, "late", ("cp", "-r", str(fixture), str(tmp_path / "work" / "late")), ("true",), 1)
    runner, report = scheduler(tmp_path, [slow, late], parallel=1, deadline_s=0.5)
    runner.run()
    assert report["jobs"]["slow"]["state"] == "finished" and report["jobs"]["late"]["state"] == "skipped"
    assert "deadline" in report["jobs"]["late"]["error"] and not (tmp_path / "out" / late.run_path).exists()
    assert gpu_protocol.select([slow, late], ["late"]) == [late]
    with pytest.raises(gpu_protocol.ProtocolError, match="no job 'later'"):
        gpu_protocol.select([slow, late], ["later"])


@pytest.mark.slow
def test_cpu_mode_trains_evaluates_and_keeps_finished_runs(tmp_path: Path):
    out, work, ship = tmp_path / "out", tmp_path / "work", tmp_path / "ship"
    command = ["run", "--tiny", "--out", str(out), "--work", str(work), "--archive-to", str(ship)]
    first = ["exp3-answer_to_question-seed0", "entity-seed0"]
    assert gpu_protocol.main([*command, "--only", *first]) == 0
    [report_path] = (out / "gpu").glob("cpu-*-protocol.json")
    report = json.loads(report_path.read_text())
    states = {name: record["state"] for name, record in report["jobs"].items()}
    assert states == dict.fromkeys(first, "finished") | dict.fromkeys(
        ["baseline-seed0", "both_orders-seed0"], "not selected"
    )
    runs = {name: out / record["run"] for name, record in report["jobs"].items()}
    assert runs["entity-seed0"] == out / "tiny_mitigations" / "runs" / "entity-seed0"
    for name, experiment in (("exp3-answer_to_question-seed0", "exp3"), ("entity-seed0", "exp1")):
        assert (runs[name] / "run_info.json").is_file() and (
            runs[name] / "eval" / f"{experiment}_metrics.json"
        ).is_file()
        assert not list(runs[name].glob("*.safetensors")) and not (runs[name] / "tokenizer.json").exists()
    info = json.loads((runs["exp3-answer_to_question-seed0"] / "run_info.json").read_text())
    assert info["resolved_config"]["dataset_config"] == "answer_to_question" and info["train_steps"] == 2
    assert report["jobs"]["entity-seed0"]["wall_s"] > 0 and report["versions"]["trl"]
    assert not (work / "tiny_mitigations" / "runs" / "entity-seed0").exists()
    assert sorted(path.name for path in ship.iterdir()) == [
        "gpu_protocol.json",
        "gpu_protocol_logs.tar.gz",
        "gpu_protocol_results.tar.gz",
    ]
    # A second call into the same --out keeps what the first finished (a warm GPU machine keeps build/).
    assert gpu_protocol.main([*command, "--only", "exp3-answer_to_question-seed0"]) == 0
    again = json.loads(report_path.read_text())["jobs"]["exp3-answer_to_question-seed0"]
    assert again["state"] == "kept" and again["wall_s"] == report["jobs"]["exp3-answer_to_question-seed0"]["wall_s"]
