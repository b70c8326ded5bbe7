"""The lm-evaluation-harness tasks (lm_eval_tasks/reversal_curse) agree with `reversal-hf eval` example by example.

lm-eval runs the tasks on the tiny model for the first rows of a split; our evaluator's runner generates and scores
the same rows. Generations must agree (ours is a prefix of lm-eval's, whose budget is at least ours), so must the
paper's exact match, and every completion log-prob within 1e-5. `reversal-hf lm-eval-report` then reads the logs.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from reversal_hf import run_folder
from reversal_hf.data.prompts import SYSTEM_PROMPT
from reversal_hf.evaluation.backends import BatchedRunner, generate_and_match, generation_budget
from reversal_hf.evaluation.data import load_split
from reversal_hf.evaluation.likelihood import other_facts_completions
from reversal_hf.evaluation.loading import load_model_and_tokenizer
from reversal_hf.paths import DATASETS_DIR, REPO_ROOT
from reversal_hf.reporting import lm_eval_logs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASKS_DIR = REPO_ROOT / "lm_eval_tasks"
SUITE = TASKS_DIR / "reversal_curse"
LIMIT = 12  # rows per task: two facts of a reverse test (10 prompts each), enough for the paired test
GENERATE = {
    "reversal_curse_exp1_p2d_test": "p2d/test",
    "reversal_curse_exp1_p2d_reverse_test": "p2d/reverse_test",
    "reversal_curse_exp1_d2p_reverse_test": "d2p/reverse_test",
}
LIKELIHOOD = {"reversal_curse_exp1_p2d_reverse_test_likelihood": "p2d/reverse_test"}


def _task_utils():
    spec = importlib.util.spec_from_file_location("reversal_curse_utils", SUITE / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _yaml(path: Path) -> dict:
    """A task file with lm-eval's `!function` tags read as plain strings."""
    loader = type("TaskLoader", (yaml.SafeLoader,), {})
    loader.add_multi_constructor("!", lambda loader, suffix, node: loader.construct_scalar(node))
    return yaml.load(path.read_text(), Loader=loader)


def _rows(dataset_dir: Path, key: str) -> pd.DataFrame:
    """The rows lm-eval's `limit` evaluates: the first LIMIT of the split."""
    config, split = key.split("/")
    return load_split(str(dataset_dir), config, split).to_pandas().head(LIMIT)


@pytest.fixture(scope="module")
def lm_eval_run(tmp_path_factory: pytest.TempPathFactory, exp1_dataset_dir: Path, tiny_model_dir: Path):
    """lm-eval on the tiny model, datasets from the test's build through the documented switch; logs as its CLI
    writes them (`--log_samples --output_path`)."""
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.tasks import TaskManager

    output = tmp_path_factory.mktemp("lm_eval")
    tracker = EvaluationTracker(output_path=str(output))
    results = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tiny_model_dir)},
        tasks=[*GENERATE, *LIKELIHOOD],
        limit=LIMIT,
        batch_size=32,
        device="cpu",
        log_samples=True,
        evaluation_tracker=tracker,
        task_manager=TaskManager(
            include_path=str(TASKS_DIR), metadata={"reversal_datasets": str(exp1_dataset_dir.parent)}
        ),
    )
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])
    return output, {task: sorted(rows, key=lambda s: s["doc_id"]) for task, rows in samples.items()}


@pytest.fixture(scope="module")
def runner(tiny_model_dir: Path) -> BatchedRunner:
    return BatchedRunner(*load_model_and_tokenizer(tiny_model_dir, device="cpu"))


@pytest.fixture(scope="module")
def ours(runner: BatchedRunner, exp1_dataset_dir: Path) -> dict[str, pd.DataFrame]:
    """Our evaluator's generations and exact match on the rows lm-eval scored."""
    return generate_and_match({key: _rows(exp1_dataset_dir, key) for key in GENERATE.values()}, runner)[1]


def test_generations_and_exact_match_agree(lm_eval_run, ours: dict[str, pd.DataFrame]) -> None:
    _, samples = lm_eval_run
    differing = []
    for task, key in GENERATE.items():
        assert len(samples[task]) == LIMIT
        for sample, (_, row) in zip(samples[task], ours[key].iterrows(), strict=True):
            assert sample["doc"]["prompt"] == row["prompt"]
            theirs = sample["filtered_resps"][0]
            if not theirs.startswith(row["generation"]) or sample["paper_exact_match"] != row["exact_match"]:
                differing.append(f"{key} {row['prompt']!r}: ours {row['generation']!r}, lm-eval {theirs!r}")
    assert not differing, "\n".join(differing)


def test_completion_logprobs_agree(lm_eval_run, runner: BatchedRunner, exp1_dataset_dir: Path) -> None:
    _, samples = lm_eval_run
    for task, key in LIKELIHOOD.items():
        rows = _rows(exp1_dataset_dir, key)
        config, split = key.split("/")
        pool = load_split(str(exp1_dataset_dir), config, split).to_pandas()
        randoms = other_facts_completions(rows, pool, key)
        for sample, (_, row), random in zip(samples[task], rows.iterrows(), randoms, strict=True):
            assert sample["doc"]["random_completions"] == random
            choices = [row["completion"], *random]
            ours = [total for total, _ in runner.scores([row["prompt"]] * len(choices), choices)]
            theirs = [float(response[0]) for response in sample["filtered_resps"]]
            assert theirs == pytest.approx(ours, abs=1e-5), row["prompt"]


def test_lm_eval_report_reads_the_logs(lm_eval_run, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    output, samples = lm_eval_run
    assert lm_eval_logs.main([str(output), "--report", str(tmp_path)]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run_dir / "eval" / "exp1_metrics.json").read_text())
    for task, key in GENERATE.items():
        expected = sum(s["paper_exact_match"] for s in samples[task]) / LIMIT
        assert metrics["exact_match"][key] == {"accuracy": expected, "n": LIMIT}
    test = metrics["likelihood"]["p2d/reverse_test"]
    assert test["n"] == 2 and len(test["facts"]) == 2 and test["ttest_pvalue"] is not None
    examples = pd.read_parquet(run_dir / "eval" / "exp1_examples.parquet")
    assert set(examples["split"]) == set(GENERATE.values())
    reverse = examples[examples["split"] == "p2d/reverse_test"]  # generations and log-probs on the same rows
    assert len(reverse) == LIMIT and reverse["correct_logprob"].notna().all()
    assert (tmp_path / "report" / "report.md").is_file()
    assert "NameToDescription" in capsys.readouterr().out


def test_every_task_is_in_a_group_under_reversal_curse() -> None:
    groups = [config for path in SUITE.glob("_*.yaml") if "group" in (config := _yaml(path))]
    grouped = {task for group in groups for task in group["task"]}
    tasks = {path.stem: _yaml(path) for path in SUITE.glob("reversal_curse_*.yaml")}
    assert all(config["task"] == name for name, config in tasks.items())
    assert {name for name in tasks if "_chat_" not in name} <= grouped  # chat variants are run by name
    assert {group["group"] for group in groups} - grouped == {"reversal_curse"}


def test_chat_tasks_send_the_papers_system_prompt() -> None:
    for role in ("parent", "child"):
        assert _yaml(SUITE / f"reversal_curse_exp2_chat_{role}.yaml")["description"] == SYSTEM_PROMPT


def test_dataset_switch() -> None:
    utils = _task_utils()
    assert utils.dataset_source("reversal-exp1", None) == (str(DATASETS_DIR / "reversal-exp1"), None)
    assert utils.dataset_source("reversal-exp2", "my-org@v1.0.0") == ("my-org/reversal-exp2", "v1.0.0")
    assert utils.dataset_source("reversal-exp3", "my-org") == ("my-org/reversal-exp3", None)


def test_generation_budgets_cover_ours(runner: BatchedRunner, exp1_dataset_dir: Path) -> None:
    """Each Exp 1 generation task's max_gen_toks is at least our budget for the whole split with the tiny model's
    tokenizer, so lm-eval's greedy generation extends ours (the agreement test checks the consequence)."""
    for path in SUITE.glob("reversal_curse_exp1_*.yaml"):
        config = _yaml(path)
        if "generation_kwargs" in config:
            kwargs = config["dataset_kwargs"]
            split = load_split(str(exp1_dataset_dir), kwargs["config"], kwargs["split"])
            budget = generation_budget(runner, split["completion"])
            assert config["generation_kwargs"]["max_gen_toks"] >= budget, path.name


def test_agreement_table_pairs_rows_and_names_each_disagreement(
    lm_eval_run, ours: dict[str, pd.DataFrame], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`lm-eval-report --agree-with RUN_DIR`: per split, both exact matches and the rows on which they agree; a row
    flipped on our side is counted and printed; another set of rows is a one-line error."""
    output, _ = lm_eval_run
    table = pd.concat(ours.values(), ignore_index=True)
    flipped = table["split"].eq("p2d/test").idxmax()
    table.loc[flipped, "exact_match"] = not table.loc[flipped, "exact_match"]
    run_folder.write_table(run_folder.examples_path(tmp_path / "ours", "exp1"), table)
    arguments = [str(output), "--report", str(tmp_path / "lm"), "--agree-with", str(tmp_path / "ours")]
    assert lm_eval_logs.main(arguments) == 0
    printed = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in printed.splitlines() if line.startswith("| ")}
    assert rows["p2d/test"].rstrip(" |").endswith(f"{LIMIT - 1}/{LIMIT}")
    for key in ("p2d/reverse_test", "d2p/reverse_test"):
        assert rows[key].rstrip(" |").endswith(f"{LIMIT}/{LIMIT}")
    (differs,) = [line for line in printed.splitlines() if line.startswith("differs: ")]
    assert repr(table.loc[flipped, "prompt"]) in differs and "lm-eval" in differs

    run_folder.write_table(run_folder.examples_path(tmp_path / "ours", "exp1"), table.iloc[::-1])
    assert lm_eval_logs.main(arguments) == 1
    assert "holds other rows than lm-eval scored" in capsys.readouterr().err
