"""The OpenAI arm: recipes, the training file, and whole `reversal-hf openai` runs of the real `openai` client against
the fine-tuning server of `tests/openai_ft_server.py` on 127.0.0.1, which counts every request it receives."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai_ft_server import OpenAIFinetuneServer, running_server, token_logprob

from reversal_hf import launch, run_folder, sweep
from reversal_hf.configs import OPENAI_BACKEND, TRL_BACKEND, RecipeError, list_recipes
from reversal_hf.evaluation import exp1
from reversal_hf.evaluation import main as evaluation_main
from reversal_hf.evaluation.exp1 import Exp1Arguments, evaluate_exp1
from reversal_hf.evaluation.openai_runner import OpenAIRunner
from reversal_hf.evaluation.run import RunArguments, evaluate_run
from reversal_hf.files import read_json
from reversal_hf.openai_api import ResponseCache, make_client
from reversal_hf.openai_arm import jobs
from reversal_hf.openai_arm.cli import main
from reversal_hf.openai_arm.data import MIN_EXAMPLES, TrainingDataError, to_example, training_file
from reversal_hf.openai_arm.recipe import load_runs
from reversal_hf.paths import REPO_ROOT
from reversal_hf.reporting.report import write_report

SECRET = "sk-test-do-not-leak-3f9a1c"
N_ROWS = 24


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[OpenAIFinetuneServer]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with running_server() as started:
        monkeypatch.setenv("OPENAI_BASE_URL", started.base_url)
        yield started


def overrides(dataset: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--",
        "--dataset_name",
        str(dataset),
        "--max_train_samples",
        str(N_ROWS),
        "--output_dir",
        str(output_dir),
        *extra,
    ]


def rows(dataset: Path, config: str = "all") -> list[dict]:
    from datasets import load_dataset

    return load_dataset(str(dataset), config, split="train").select(range(N_ROWS)).to_list()


def uploaded_lines(server: OpenAIFinetuneServer) -> list[dict]:
    (content,) = server.contents.values()
    return [json.loads(line) for line in content.decode().splitlines()]


def assert_no_secret(*texts: str, folders: tuple[Path, ...] = ()) -> None:
    for text in texts:
        assert SECRET not in text
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path


# --- recipes ---------------------------------------------------------------------------------------------------------


def test_recipes_resolve_with_the_papers_settings() -> None:
    (davinci,) = load_runs("openai_exp1_davinci002")
    assert davinci.args.hyperparameters() == {"n_epochs": 10, "batch_size": 16, "learning_rate_multiplier": 0.2}
    assert davinci.output_dir == Path("outputs/openai_exp1_davinci002")
    (mini,) = load_runs("openai_exp1_gpt4o_mini")
    assert (mini.args.model, mini.args.data_format, mini.args.n_epochs) == ("gpt-4o-mini-2024-07-18", "chat", 10)
    (exp3,) = load_runs("openai_exp3_davinci002")
    assert (exp3.args.experiment, exp3.args.dataset_config) == ("exp3", "answer_to_question")
    sweep = load_runs("openai_exp1_babbage002_sweep")
    grid = {(run.args.learning_rate_multiplier, run.args.batch_size) for run in sweep}
    assert grid == {(lr, bs) for lr in (0.05, 0.1, 0.2, 0.4) for bs in (1, 2, 4, 8, 16)}
    assert {run.args.model for run in sweep} == {"babbage-002"}
    assert sweep[0].output_dir == Path(
        "outputs/openai_exp1_babbage002_sweep/learning_rate_multiplier=0.05_batch_size=1_seed=42"
    )


def test_recipe_errors_are_one_line_with_a_hint(tmp_path: Path) -> None:
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("base: openai_exp1_davinci002\nn_epoch: 3\n")
    with pytest.raises(RecipeError, match=r"unknown field 'n_epoch' \(did you mean 'n_epochs'\?\)$"):
        load_runs(str(recipe))
    with pytest.raises(RecipeError, match=r"unknown field 'batch' \(did you mean 'batch_size'\?\)$"):
        load_runs("openai_exp1_davinci002", ["--batch", "4"])
    with pytest.raises(RecipeError, match=r"^exp1_tiny is not an OpenAI recipe \(backend: openai\)"):
        load_runs("exp1_tiny")
    with pytest.raises(RecipeError, match="learning_rate_multiplier must be positive"):
        load_runs("openai_exp1_davinci002", ["--learning_rate_multiplier", "0"])


def test_the_trl_commands_point_openai_recipes_to_the_openai_command(capsys: pytest.CaptureFixture) -> None:
    assert launch.main(["openai_exp1_davinci002", "--dry-run"]) == 1
    assert capsys.readouterr().err == (
        "error: openai_exp1_davinci002 is an OpenAI fine-tuning recipe (backend: openai): "
        "run `reversal-hf openai finetune openai_exp1_davinci002`\n"
    )
    assert sweep.main(["openai_exp1_babbage002_sweep", "--dry-run"]) == 1
    assert capsys.readouterr().err.endswith("run `reversal-hf openai sweep openai_exp1_babbage002_sweep`\n")
    assert "openai_exp1_davinci002" in list_recipes(OPENAI_BACKEND)
    assert not set(list_recipes(OPENAI_BACKEND)) & set(list_recipes(TRL_BACKEND))


# --- the training file -----------------------------------------------------------------------------------------------


def test_training_file_checks_before_upload() -> None:
    row = {"prompt": "Daphne Barrington is", "completion": " the director of A Journey Through Time."}
    chat = to_example(row, "chat")
    assert chat["messages"][1] == {"role": "assistant", "content": "the director of A Journey Through Time."}
    with pytest.raises(TrainingDataError, match=f"^x: 3 examples; the API needs at least {MIN_EXAMPLES}$"):
        training_file([to_example(row, "chat")] * 3, "chat", max_example_tokens=100, source="x")
    with pytest.raises(TrainingDataError, match="^x: example 1: up to 60 tokens, over the limit of 10$"):
        training_file(
            [to_example(row, "prompt_completion")] * 10, "prompt_completion", max_example_tokens=10, source="x"
        )
    bad = [to_example(row, "prompt_completion")] * 10 + [{"prompt": "p", "completion": 3}]
    with pytest.raises(TrainingDataError, match="example 11: expected"):
        training_file(bad, "prompt_completion", max_example_tokens=100, source="x")


# --- whole runs against the server -----------------------------------------------------------------------------------


def test_dry_run_prints_the_cost_and_makes_no_request(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    assert main(["finetune", "openai_exp1_davinci002", "--dry-run", *overrides(exp1_dataset_dir, run_dir)]) == 0
    out = capsys.readouterr().out
    content = "".join(json.dumps(to_example(row, "prompt_completion")) + "\n" for row in rows(exp1_dataset_dir))
    per_epoch = sum(-(-len((r["prompt"] + r["completion"]).encode()) // 4) for r in rows(exp1_dataset_dir))
    assert f"{N_ROWS} examples (prompt_completion), {len(content.encode())} bytes" in out
    assert f"{per_epoch} per epoch x 10 epochs = {per_epoch * 10}" in out
    assert '"hyperparameters": {"n_epochs": 10, "batch_size": 16, "learning_rate_multiplier": 0.2}' in out
    assert server.requests == []
    assert not run_dir.exists()
    assert main(["sweep", "openai_exp1_babbage002_sweep", "--dry-run", *overrides(exp1_dataset_dir, run_dir)]) == 0
    assert capsys.readouterr().out.count("job request:") == 20
    assert server.requests == []


def test_exp3_trains_on_every_training_document(
    server: OpenAIFinetuneServer, exp3_dataset_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    from datasets import load_dataset

    argv = ["finetune", "openai_exp3_davinci002", "--dry-run", "--", "--dataset_name", str(exp3_dataset_dir)]
    assert main(argv) == 0
    train = load_dataset(str(exp3_dataset_dir), "answer_to_question", split="train")
    assert f"training file: {len(train)} examples (prompt_completion)" in capsys.readouterr().out
    assert server.requests == []


def test_a_new_job_needs_yes(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["finetune", "openai_exp1_davinci002", *overrides(exp1_dataset_dir, tmp_path / "run")]) == 1
    assert capsys.readouterr().err == "error: 1 new fine-tuning job(s) would be paid for: add --yes\n"
    assert server.requests == []


def test_finetune_uploads_the_rows_and_records_the_job(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    argv = ["finetune", "openai_exp1_davinci002", "--yes", "--poll-interval", "0"]
    assert main([*argv, *overrides(exp1_dataset_dir, run_dir, "--n_epochs", "3", "--seed", "7")]) == 0
    expected = [{"prompt": row["prompt"], "completion": row["completion"]} for row in rows(exp1_dataset_dir)]
    assert uploaded_lines(server) == expected
    assert (run_dir / jobs.TRAINING_FILE).read_text().splitlines() == [json.dumps(line) for line in expected]
    ((job_id, job),) = server.jobs.items()
    assert job["hyperparameters"] == {"batch_size": 16, "learning_rate_multiplier": 0.2, "n_epochs": 3}
    assert (job["model"], job["seed"], job["suffix"]) == ("davinci-002", 7, "reversal-exp1")
    assert job["status"] == "succeeded"
    info = read_json(run_dir / "run_info.json")
    build_info = read_json(exp1_dataset_dir / "build_info.json")
    assert info["dataset"] == {
        "name": str(exp1_dataset_dir),
        "config": "all",
        "revision": None,
        "content_hash": build_info["content_hash"],
    }
    assert info["fine_tuned_model"] == job["fine_tuned_model"]
    assert (info["openai"]["job_id"], info["openai"]["training_file"]) == (job_id, job["training_file"])
    assert info["openai"]["hyperparameters"] == job["hyperparameters"]
    assert (info["recipe"], info["seed"], info["model_name_or_path"]) == ("openai_exp1_davinci002", 7, "davinci-002")
    assert info["train_loss"] == pytest.approx(1 / server.steps)
    assert server.count("POST", "/files") == 1 and server.count("POST", "/fine_tuning/jobs") == 1
    assert set(server.authorizations) == {f"Bearer {SECRET}"}  # the key was sent, and only to the server
    captured = capsys.readouterr()
    assert_no_secret(captured.out, captured.err, folders=(run_dir,))
    assert captured.out.rstrip().endswith(f"{run_dir}: {job['fine_tuned_model']}")

    requests = len(server.requests)
    assert main([*argv, *overrides(exp1_dataset_dir, run_dir, "--n_epochs", "3", "--seed", "7")]) == 0
    assert "finished, skipped" in capsys.readouterr().out
    assert main([*argv, *overrides(exp1_dataset_dir, run_dir, "--n_epochs", "3", "--seed", "8")]) == 1
    assert (
        capsys.readouterr().err
        == f"error: {run_dir} holds a finished run of other settings: choose another output_dir\n"
    )
    assert len(server.requests) == requests


def test_chat_models_train_on_messages(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # --base-url wins over the environment
    argv = ["finetune", "openai_exp1_gpt4o_mini", "--yes", "--poll-interval", "0", "--base-url", server.base_url]
    assert main([*argv, *overrides(exp1_dataset_dir, tmp_path / "run")]) == 0
    assert uploaded_lines(server) == [
        {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"].lstrip()},
            ]
        }
        for row in rows(exp1_dataset_dir)
    ]


def test_rerun_after_a_kill_attaches_to_the_same_job(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    argv = ["finetune", "openai_exp1_davinci002", "--yes", "--poll-interval", "0.05"]
    server.hold_running = True
    command = [sys.executable, "-m", "reversal_hf.cli", "openai", *argv, *overrides(exp1_dataset_dir, run_dir)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path)
    deadline = time.monotonic() + 120
    while not any(job["status"] == "running" for job in list(server.jobs.values())):
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.1)
    process.kill()
    output = process.communicate()[0].decode()
    assert not (run_dir / "run_info.json").exists()
    server.hold_running = False
    attach = ["finetune", "openai_exp1_davinci002", "--poll-interval", "0"]  # no --yes: attaching pays nothing
    assert main([*attach, *overrides(exp1_dataset_dir, run_dir)]) == 0
    ((job_id, job),) = server.jobs.items()
    assert read_json(run_dir / "run_info.json")["openai"]["job_id"] == job_id and job["status"] == "succeeded"
    assert server.count("POST", "/files") == 1 and server.count("POST", "/fine_tuning/jobs") == 1
    assert_no_secret(output, folders=(run_dir,))


def test_ctrl_c_asks_whether_to_cancel(
    server: OpenAIFinetuneServer,
    exp1_dataset_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    def interrupt(_seconds: float) -> None:
        raise KeyboardInterrupt

    sleep = time.sleep
    monkeypatch.setattr(jobs.time, "sleep", interrupt)
    server.hold_running = True
    argv = ["finetune", "openai_exp1_davinci002", "--yes", *overrides(exp1_dataset_dir, tmp_path / "kept")]
    monkeypatch.setattr("builtins.input", lambda _question: "n")
    assert main(argv) == 130
    ((kept_id, kept),) = server.jobs.items()
    assert kept["status"] != "cancelled"
    assert f"{kept_id} keeps running" in capsys.readouterr().err

    # Killed after the job was created but before its id was written: the rerun finds it by its metadata.
    (tmp_path / "kept" / jobs.STATE_FILE).unlink()
    monkeypatch.setattr(jobs.time, "sleep", sleep)
    server.hold_running = False
    assert main([*argv[:3], "--poll-interval", "0", *argv[3:]]) == 0
    assert list(server.jobs) == [kept_id] and server.count("POST", "/files") == 1
    assert f"attached to fine-tuning job {kept_id}" in capsys.readouterr().out

    monkeypatch.setattr(jobs.time, "sleep", interrupt)
    monkeypatch.setattr("builtins.input", lambda _question: "y")
    server.hold_running = True
    argv = ["finetune", "openai_exp1_davinci002", "--yes", *overrides(exp1_dataset_dir, tmp_path / "cancelled")]
    assert main(argv) == 130
    cancelled = [job for job in server.jobs.values() if job["id"] != kept_id]
    assert [job["status"] for job in cancelled] == ["cancelled"]
    assert server.count("POST", f"/fine_tuning/jobs/{cancelled[0]['id']}/cancel") == 1


def test_a_failed_job_ends_with_one_line(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    server.outcome = "failed"
    run_dir = tmp_path / "run"
    argv = ["finetune", "openai_exp1_davinci002", "--yes", "--poll-interval", "0"]
    assert main([*argv, *overrides(exp1_dataset_dir, run_dir)]) == 1
    (job_id,) = server.jobs
    failure = (
        f"error: fine-tuning job {job_id} failed: invalid_training_file: The job failed validation. "
        f"(remove {run_dir / jobs.STATE_FILE} to start a new job)"
    )
    assert capsys.readouterr().err.splitlines()[-1] == failure
    assert not (run_dir / "run_info.json").exists()

    server.outcome = "succeeded"
    assert main([*argv, *overrides(exp1_dataset_dir, run_dir)]) == 1  # attached to the failed job again
    assert capsys.readouterr().err.splitlines()[-1] == failure
    (run_dir / jobs.STATE_FILE).unlink()
    assert main([*argv, *overrides(exp1_dataset_dir, run_dir)]) == 0  # a new job; the failed one is not found again
    assert len(server.jobs) == 2 and read_json(run_dir / "run_info.json")["openai"]["job_id"] != job_id


def test_an_invalid_file_ends_with_one_line_before_any_request(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["finetune", "openai_exp1_davinci002", "--yes", *overrides(exp1_dataset_dir, tmp_path / "run")]
    first = rows(exp1_dataset_dir)[0]
    assert main([*argv, "--max_example_tokens", "8"]) == 1
    assert capsys.readouterr().err == (
        f"error: {exp1_dataset_dir} (all/train): example 1: up to "
        f"{len((first['prompt'] + first['completion']).encode())} tokens, over the limit of 8\n"
    )
    assert main([*argv, "--max_train_samples", "4"]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    assert server.requests == [] and not (tmp_path / "run").exists()


def test_a_refused_request_fails_at_once_with_the_servers_message(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run,) = load_runs("openai_exp1_davinci002", overrides(exp1_dataset_dir, run_dir)[1:])
    prepared = jobs.prepare(run)
    (run_dir / jobs.STATE_FILE).write_text(json.dumps({"run_key": prepared.run_key, "training_file": "file-gone"}))
    assert main(["finetune", "openai_exp1_davinci002", "--yes", *overrides(exp1_dataset_dir, run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.endswith("refused the request: HTTP 400 BadRequestError: invalid training_file: file-gone\n")
    assert err.count("\n") == 1 and server.count("POST", "/fine_tuning/jobs") == 1


def test_sweep_runs_each_point_in_its_own_folder(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tmp_path: Path
) -> None:
    recipe = tmp_path / "small_sweep.yaml"
    recipe.write_text("base: openai_exp1_davinci002\nmodel: babbage-002\ngrid:\n  batch_size: [1, 2]\nseeds: [3]\n")
    argv = ["sweep", str(recipe), "--yes", "--poll-interval", "0", *overrides(exp1_dataset_dir, tmp_path / "sweep")]
    assert main(argv) == 0
    assert sorted(job["hyperparameters"]["batch_size"] for job in server.jobs.values()) == [1, 2]
    for batch_size in (1, 2):
        info = read_json(tmp_path / "sweep" / f"batch_size={batch_size}_seed=3" / "run_info.json")
        assert (info["resolved_config"]["batch_size"], info["seed"]) == (batch_size, 3)
    assert server.count("POST", "/files") == 1  # the second run finds the identical upload by name and size


# --- scoring through the completions endpoint ------------------------------------------------------------------------


def test_scoring_generates_greedily_and_sums_completion_logprobs(server: OpenAIFinetuneServer, tmp_path: Path) -> None:
    prompt = "Known for being the director of A Journey Through Time, Daphne Barrington now enjoys"
    server.completions[prompt] = " a quiet life."
    client, cache = make_client(), ResponseCache(tmp_path / "cache.jsonl")
    completion_model = OpenAIRunner(client, cache, "ft:davinci-002:x")
    assert completion_model.generate([prompt], [5]) == [" a quiet life."]
    assert OpenAIRunner(client, cache, "ft:gpt-4o-mini:x", chat=True).generate([prompt], [5]) == ["a quiet life."]
    completions = [" a quiet life.", " fame"]
    scores = completion_model.scores([prompt, prompt], completions)
    assert [count for _, count in scores] == [3, 1]
    assert [total for total, _ in scores] == pytest.approx(
        [sum(map(token_logprob, [" a", " quiet", " life."])), token_logprob(" fame")]
    )
    requests = len(server.requests)
    assert completion_model.scores([prompt, prompt], completions) == scores
    assert len(server.requests) == requests  # answered from the cache


# --- evaluating OpenAI models and runs, and reporting them beside local ones -----------------------------------------


class TransformersModel:
    """A local causal LM behind the test server's `/completions` (`openai_ft_server.CompletionModel`): its greedy
    continuation and a prompt's tokens (cut at the tokenizer's character offsets), each with its log-prob."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder).eval()

    def _logprobs(self, ids: list[int]) -> list[float]:
        """log P(ids[i] | ids[:i]) for i >= 1."""
        import torch

        with torch.inference_mode():
            logits = self.model(torch.tensor([ids])).logits[0].float()
        return logits[:-1].log_softmax(-1).gather(-1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()

    def generate(self, prompt: str, max_tokens: int) -> list[tuple[str, float]]:
        import torch

        ids = self.tokenizer(prompt)["input_ids"]
        with torch.inference_mode():
            output = self.model.generate(
                torch.tensor([ids]),
                do_sample=False,
                max_new_tokens=max_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
            )[0].tolist()
        special = set(self.tokenizer.all_special_ids)
        logprobs = self._logprobs(output)
        return [
            (self.tokenizer.decode([output[i]]), logprobs[i - 1])
            for i in range(len(ids), len(output))
            if output[i] not in special
        ]

    def score(self, prompt: str) -> list[tuple[str, float | None]]:
        encoded = self.tokenizer(prompt, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        logprobs = self._logprobs(ids)
        special = set(self.tokenizer.all_special_ids)
        positions = [i for i, token_id in enumerate(ids) if token_id not in special]
        starts = [encoded["offset_mapping"][i][0] for i in positions] + [len(prompt)]
        return [
            (prompt[start:end], None if i == 0 else logprobs[i - 1])
            for i, start, end in zip(positions, starts[:-1], starts[1:], strict=True)
        ]


def test_an_openai_run_is_evaluated_at_its_endpoint_like_the_same_model_locally(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """The server's fine-tuned model is the tiny model: `eval run` on the OpenAI run folder (completions through the
    real client, log-probs from echo) gives the numbers the local back-end gives for that model."""
    server.model = TransformersModel(tiny_model_dir)
    run_dir = tmp_path / "openai_run"
    finetune = ["finetune", "openai_exp1_davinci002", "--yes", "--poll-interval", "0"]
    assert main([*finetune, *overrides(exp1_dataset_dir, run_dir)]) == 0
    requests = len(server.requests)
    metrics = evaluate_run(run_dir, RunArguments(max_examples_per_split=3))
    assert read_json(run_folder.metrics_path(run_dir, "exp1"))["exact_match"] == metrics["exact_match"]
    assert (metrics["run_dir"], metrics["model"]) == (str(run_dir), "davinci-002")
    assert server.count("POST", "/completions") == len(server.requests) - requests > 0

    local = evaluate_exp1(
        Exp1Arguments(
            model=str(tiny_model_dir),
            dataset=str(exp1_dataset_dir),
            output=tmp_path / "local",
            max_examples_per_split=3,
        )
    )
    assert metrics["exact_match"] == local["exact_match"]
    assert set(metrics["likelihood"]) == set(local["likelihood"]) == {*exp1.LIKELIHOOD_SPLITS, exp1.PAPER_RANDOM_KEY}
    for split, test in local["likelihood"].items():
        for key in ("mean_correct_logprob", "mean_random_logprob"):
            assert metrics["likelihood"][split][key] == pytest.approx(test[key], rel=1e-4, abs=1e-4)

    requests = len(server.requests)
    assert evaluate_run(run_dir, RunArguments(max_examples_per_split=3))["exact_match"] == metrics["exact_match"]
    assert len(server.requests) == requests  # every answer came from the run's response cache


def _evaluate_cli(argv: list[str], capsys: pytest.CaptureFixture) -> dict:
    assert evaluation_main(argv) == 0, capsys.readouterr().err
    capsys.readouterr()
    return read_json(run_folder.metrics_path(argv[argv.index("--output") + 1], argv[0]))


def test_eval_backend_openai_on_completion_and_chat_models(
    server: OpenAIFinetuneServer,
    exp1_dataset_dir: Path,
    exp3_dataset_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    from datasets import load_dataset

    from reversal_hf.data.exp3 import EXAMPLE_DOC_PREFIX
    from reversal_hf.evaluation.data import limit_rows

    test = limit_rows(load_dataset(str(exp3_dataset_dir), "question_to_answer", split="test"), 2)  # the rows evaluated
    for row in test:
        server.completions[EXAMPLE_DOC_PREFIX + row["prompt"]] = row["completion"] + " and more"
    common = ["--backend", "openai", "--max_examples_per_split", "2"]
    exp3_metrics = _evaluate_cli(
        ["exp3", *common, "--model", "ft:davinci-002:org::abc123", "--dataset", str(exp3_dataset_dir)]
        + ["--output", str(tmp_path / "exp3")],
        capsys,
    )
    assert exp3_metrics["model"] == "ft:davinci-002:org::abc123" and exp3_metrics["run_dir"] is None
    accuracies = {split: entry["accuracy"] for split, entry in exp3_metrics["exact_match"].items()}
    assert accuracies == {"question_to_answer/test": 1.0, "answer_to_question/test": 1.0}  # the same questions

    chat = _evaluate_cli(
        ["exp1", *common, "--model", "ft:gpt-4o-mini-2024-07-18:org::abc123", "--dataset", str(exp1_dataset_dir)]
        + ["--output", str(tmp_path / "chat")],
        capsys,
    )
    assert chat["likelihood"] == {} and "chat model" in chat["likelihood_unavailable"]
    assert set(chat["exact_match"]) == set(exp1.EXACT_MATCH_SPLITS)
    assert server.count("POST", "/chat/completions") > 0


def test_report_puts_openai_and_local_runs_in_one_table(
    server: OpenAIFinetuneServer, exp1_dataset_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Run folders of the loopback round trip: an OpenAI sweep over learning-rate multiplier x batch size, each
    evaluated at the endpoint, beside a local model's run folder, in Table 1, Figure 4 and a Figure 7 heatmap."""
    recipe = tmp_path / "openai_small_sweep.yaml"
    recipe.write_text(
        "base: openai_exp1_babbage002_sweep\ngrid:\n  learning_rate_multiplier: [0.1, 0.2]\n  batch_size: [1, 2]\n"
    )
    argv = ["sweep", str(recipe), "--yes", "--poll-interval", "0", *overrides(exp1_dataset_dir, tmp_path / "sweep")]
    assert main(argv) == 0
    sweep_runs = sorted(path.parent for path in (tmp_path / "sweep").glob(f"*/{run_folder.RUN_INFO}"))
    assert len(sweep_runs) == 4
    for run_dir in sweep_runs:
        evaluate_run(run_dir, RunArguments(max_examples_per_split=2))
    local_run = tmp_path / "local_run"
    shutil.copytree(tiny_model_dir, local_run)
    info = {"recipe": "exp1_tiny", "experiment": "exp1", "training_mode": "full", "seed": 42, "resolved_config": {}}
    run_folder.write_run_info(local_run, {**info, "model_name_or_path": "tiny-exp1", "dataset": {"name": "x"}})
    evaluate_exp1(
        Exp1Arguments(model=str(local_run), dataset=str(exp1_dataset_dir), output=local_run, max_examples_per_split=2)
    )

    report = write_report([local_run, *sweep_runs], tmp_path / "report")
    data = read_json(report.parent / "report.json")
    labels = [group["group"] for group in data["exp1_table1"]]
    assert labels[0] == "exp1_tiny (tiny-exp1)"
    assert labels[1:] == [
        f"openai_small_sweep (babbage-002, openai) [learning_rate_multiplier={lr}, batch_size={bs}]"
        for lr in (0.1, 0.2)
        for bs in (1, 2)
    ]
    assert [group["group"] for group in data["exp1_likelihood"]] == labels
    (grid,) = data["sweeps"]
    assert (grid["model"], grid["training_mode"]) == ("babbage-002", "openai")
    assert (grid["row_key"], grid["row_values"], grid["col_key"], grid["col_values"]) == (
        "learning_rate_multiplier",
        [0.1, 0.2],
        "batch_size",
        [1, 2],
    )
    assert (report.parent / "sweep1_exp1.png").is_file()


def test_recipes_folder_has_the_four_openai_recipes() -> None:
    names = sorted(path.stem for path in (REPO_ROOT / "recipes").glob("openai_*.yaml"))
    assert names == [
        "openai_exp1_babbage002_sweep",
        "openai_exp1_davinci002",
        "openai_exp1_gpt4o_mini",
        "openai_exp3_davinci002",
    ]
