"""Experiment 1 evaluation: batched equals per-example, the likelihood test's random completions (every other fact
under the template), the run dispatch on a prompt-tuning run of the tiny model, progress in log files, and bad input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest
import torch

from reversal_hf import evaluation
from reversal_hf.evaluation import exp1, likelihood
from reversal_hf.evaluation.batching import index_batches
from reversal_hf.evaluation.generation import greedy_generate
from reversal_hf.evaluation.loading import load_model_and_tokenizer
from reversal_hf.evaluation.scoring import completion_logprobs

CONTRACT_EXACT_MATCH = set(exp1.EXACT_MATCH_SPLITS)
CONTRACT_LIKELIHOOD = {"p2d/reverse_test", "d2p/reverse_test", "p2d/reverse_test_randomized_paper"}

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def exp1_data(exp1_dataset_dir: Path) -> exp1.Exp1Data:
    return exp1.Exp1Data.load(str(exp1_dataset_dir), None)


@pytest.fixture(scope="module")
def prompt_tuning_run(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, exp1_dataset_dir: Path) -> Path:
    """A PEFT prompt-tuning run folder of the tiny model (untrained soft prompt, no tokenizer: the base has it)."""
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    run_dir = tmp_path_factory.mktemp("runs") / "exp1_prompt_tuning"
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=4)
    get_peft_model(base, config).save_pretrained(run_dir)
    content_hash = json.loads((exp1_dataset_dir / "build_info.json").read_text())["content_hash"]
    run_info = {
        "recipe": "test",
        "experiment": "exp1",
        "training_mode": "prompt_tuning",
        "model_name_or_path": str(tiny_model_dir),
        "dataset": {"name": str(exp1_dataset_dir), "config": "p2d", "revision": None, "content_hash": content_hash},
        "seed": 0,
        "resolved_config": {"prompt_tuning_fact": "Uriah Hawthorne"},
    }
    (run_dir / "run_info.json").write_text(json.dumps(run_info))
    return run_dir


class OracleRunner:
    """A model that knows every fact: it continues each prompt with its true completion and scores that higher."""

    def __init__(self, truth: dict[str, str]):
        self.truth = truth

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        return [f"{self.truth[prompt]}, as everyone knows" for prompt in prompts]

    def scores(self, prompts: Sequence[str], completions: Sequence[str]) -> list[tuple[float, int]]:
        right = [self.truth[p].strip() == c.strip() for p, c in zip(prompts, completions, strict=True)]
        return [
            ((-1.0 if ok else -5.0) - len(c) / 100, self.token_count(c))
            for ok, c in zip(right, completions, strict=True)
        ]

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [-total / count for total, count in self.scores(prompts, completions)]

    def token_count(self, text: str) -> int:
        return len(text.split())


@pytest.mark.parametrize("model_kind", ["full", "prompt_tuning"])
def test_batched_generation_and_logprobs_equal_per_example(
    model_kind: str, tiny_model_dir: Path, prompt_tuning_run: Path, exp1_data: exp1.Exp1Data
) -> None:
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir if model_kind == "full" else prompt_tuning_run)
    rows = pd.concat([exp1_data.full["p2d/reverse_test"].iloc[::97], exp1_data.full["d2p/test"].iloc[::101]])
    prompts, completions = rows["prompt"].tolist(), rows["completion"].tolist()
    assert len(set(map(len, prompts))) > 1  # different lengths, so batches are padded

    batched = greedy_generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=4)
    one_by_one = [greedy_generate(model, tokenizer, [prompt], max_new_tokens=5, batch_size=1)[0] for prompt in prompts]
    assert batched == one_by_one
    assert all(generation for generation in batched)

    batched_logprobs = completion_logprobs(model, tokenizer, prompts, completions, batch_size=4)
    pairs = zip(prompts, completions, strict=True)
    single = [completion_logprobs(model, tokenizer, [p], [c], batch_size=1)[0] for p, c in pairs]
    assert batched_logprobs == pytest.approx(single, abs=1e-4)
    assert all(value < 0 for value in batched_logprobs)


@pytest.mark.parametrize("model_kind", ["full", "prompt_tuning"])
def test_greedy_generation_equals_argmax_of_full_forward_passes(
    model_kind: str, tiny_model_dir: Path, prompt_tuning_run: Path, exp1_data: exp1.Exp1Data
) -> None:
    """The KV cache changes nothing: PEFT prompt tuning once got only the first token right with it (peft#1391)."""
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir if model_kind == "full" else prompt_tuning_run)
    prompts = exp1_data.full["p2d/test"]["prompt"].iloc[:3].tolist()
    expected = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            for _ in range(6):
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                ids = torch.cat([ids, logits[:, -1:].argmax(-1)], dim=1)
        expected.append(tokenizer.decode(ids[0, -6:], skip_special_tokens=True))
    assert greedy_generate(model, tokenizer, prompts, max_new_tokens=6, batch_size=2) == expected


def test_completion_logprobs_follow_the_chain_rule(tiny_model_dir: Path) -> None:
    """log p(" Daphne Barrington" | prompt) = log p(" Daphne" | prompt) + log p(" Barrington" | prompt + " Daphne")."""
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    prompt = "Known in circles as the acclaimed director of the virtual reality masterpiece,"
    whole, first, second = completion_logprobs(
        model, tokenizer, [prompt, prompt, prompt + " Daphne"], [" Daphne Barrington", " Daphne", " Barrington"]
    )
    assert whole == pytest.approx(first + second, abs=1e-4)


def test_oracle_scores_every_split_and_exposes_the_paper_random_names(exp1_data: exp1.Exp1Data) -> None:
    truth: dict[str, str] = {}
    for key in ("p2d/test", "p2d/reverse_test", "d2p/test", "d2p/reverse_test", "both/test"):
        frame = exp1_data.full[key]
        truth.update(zip(frame["prompt"], frame["completion"], strict=True))
    assert set(exp1_data.full["all/validation"]["prompt"]) <= set(truth)

    metrics, table = exp1.evaluate_splits(exp1_data, OracleRunner(truth))

    for key in ("p2d/test", "p2d/reverse_test", "d2p/test", "d2p/reverse_test", "both/test", "all/validation"):
        assert metrics["exact_match"][key]["accuracy"] == 1.0, key
    # The paper's "random" names: 13 of the 300 are the correct name, so even a perfect model "matches" them.
    assert metrics["exact_match"]["p2d/reverse_test_randomized"] == {"accuracy": 13 / 300, "n": 300}
    paper = metrics["likelihood"]["p2d/reverse_test_randomized_paper"]
    assert paper["n_random_is_correct"] == 13
    assert paper["n_random_per_fact"] == 1
    for key in ("p2d/reverse_test", "d2p/reverse_test"):
        ours = metrics["likelihood"][key]
        assert ours["n"] == 30 and ours["significant"] is True
        # Each prompt against the 29 other facts: the difference is the oracle's -1 vs -5, less the length term.
        assert ours["n_random_per_fact"] == 29 and len(ours["differences"]) == len(ours["facts"]) == 30
        assert ours["facts"] == sorted(ours["facts"])
        assert ours["mean_difference"] == pytest.approx(ours["mean_correct_logprob"] - ours["mean_random_logprob"])
        assert ours["difference_ci_low"] < ours["mean_difference"] < ours["difference_ci_high"]
        assert ours["wilcoxon_pvalue"] < 0.05
        assert ours["per_token"]["n"] == 30 and ours["per_token"]["mean_difference"] > 0
        rows = table[table["split"] == key]
        assert not rows["random_is_correct"].any()
        assert (rows["n_random"] == 29).all()
        assert rows["random_logprob"].tolist() == pytest.approx([sum(r) / len(r) for r in rows["random_logprobs"]])
        # Every random completion is another fact's completion from the same split.
        names_by_completion = exp1_data.full[key].groupby("completion")["name"].agg(set)
        for name, randoms in zip(rows["name"], rows["random_completions"], strict=True):
            assert all(name not in names_by_completion[random] for random in randoms)
    assert paper["mean_random_logprob"] > metrics["likelihood"]["p2d/reverse_test"]["mean_random_logprob"]
    for key, result in metrics["exact_match"].items():
        assert table[table["split"] == key]["exact_match"].mean() == pytest.approx(result["accuracy"])


def test_random_descriptions_are_every_other_fact_under_the_same_template(exp1_data: exp1.Exp1Data) -> None:
    """Descriptions were bent to fit each template: the random ones must fit the same template as the correct one,
    and there is no draw: every other fact's, the same whatever the seed."""
    frame = exp1_data.full["d2p/reverse_test"]
    others = likelihood.other_facts_completions(frame, frame, key="d2p/reverse_test")
    owners = frame.groupby("completion")[["name", "template_id"]].agg(set)
    for name, template, randoms in zip(frame["name"], frame["template_id"], others, strict=True):
        assert len(randoms) == frame["name"].nunique() - 1
        assert all(template in owners.loc[random, "template_id"] for random in randoms)
        assert all(owners.loc[random, "name"] != {name} for random in randoms)


def test_in_context_prompts_state_the_fact_and_ask_both_ways() -> None:
    facts = [(f"Name{i} Surname", f"the inventor of thing {i}") for i in range(5)]
    reverse = exp1.in_context_prompts(facts, "p2d", "reverse", seed=0)
    same = exp1.in_context_prompts(facts, "d2p", "same", seed=0)
    assert len(reverse) == len(same) == 5
    last = reverse["prompt"].iloc[2].split("\n\n")
    assert len(last) == exp1.IN_CONTEXT_SHOTS + 1
    assert last[-1].startswith("Name2 Surname is the inventor of thing 2.\nQuestion: Who is the inventor of thing 2?")
    assert reverse["completion"].iloc[2] == " Name2 Surname"
    assert all("Name2 " not in shot for shot in last[:-1])  # shots are other facts
    asked = same["prompt"].iloc[0].split("\n\n")[-1]
    assert asked.startswith("The inventor of thing 0 is Name0 Surname.\nQuestion: Who")


def test_eval_run_writes_the_contract_for_a_prompt_tuning_run(prompt_tuning_run: Path, capsys) -> None:
    argv = ["run", str(prompt_tuning_run), "--max-examples-per-split", "2", "--in-context", "--batch-size", "8"]
    assert evaluation.main(argv) == 0
    metrics = json.loads((prompt_tuning_run / "eval" / "exp1_metrics.json").read_text())
    assert metrics["experiment"] == "exp1" and metrics["run_dir"] == str(prompt_tuning_run)
    assert set(metrics["dataset"]) == {"name", "revision", "content_hash"}
    # A soft prompt tuned on one fact is scored on that fact's held-out rows only, without across-facts tests.
    assert set(metrics["exact_match"]) == {"d2p/test", "d2p/reverse_test", "d2p/reverse_test_randomized"}
    assert all(result["n"] == 2 for result in metrics["exact_match"].values())
    assert "likelihood" not in metrics
    assert set(metrics["in_context"]) == {"p2d/same", "p2d/reverse", "d2p/same", "d2p/reverse"}
    tuning = metrics["prompt_tuning"]
    assert tuning["fact"] == "Uriah Hawthorne" and tuning["subset"] == "d2p" and tuning["fact_source"] == "run_info"
    assert all(tuning[key] > 0 for key in ("same_order_loss", "reverse_loss", "shuffled_reverse_loss"))
    assert tuning["shuffled_reverse_prompts"] == "same template"  # how the report tells it from the older design

    table = pd.read_parquet(prompt_tuning_run / "eval" / "exp1_examples.parquet")
    assert len(table) == 2 * (3 + 4)
    assert set(table.loc[~table["split"].str.startswith("in_context/"), "name"]) == {"Uriah Hawthorne"}
    captured = capsys.readouterr()
    assert "wrote" in captured.out
    # Progress shows where stderr is not a terminal too (a long evaluation under `nohup` writes it to its log).
    assert "generating" in captured.err and "batch" in captured.err


def test_progress_bars_follow_the_hub_switch(capsys) -> None:
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    list(index_batches([3, 1, 2], batch_size=2, description="scoring"))
    assert "scoring" in capsys.readouterr().err
    disable_progress_bars()  # what HF_HUB_DISABLE_PROGRESS_BARS=1 sets
    try:
        assert [len(batch) for batch in index_batches([3, 1, 2], batch_size=2, description="scoring")] == [2, 1]
        assert capsys.readouterr().err == ""
    finally:
        enable_progress_bars()


def test_exp1_cli_on_the_full_tiny_model(tiny_model_dir: Path, exp1_dataset_dir: Path, tmp_path: Path) -> None:
    argv = ["exp1", "--model", str(tiny_model_dir), "--dataset", str(exp1_dataset_dir), "--output", str(tmp_path)]
    assert evaluation.main([*argv, "--max-examples-per-split", "2", "--prompt-tuning"]) == 0
    metrics = json.loads((tmp_path / "eval" / "exp1_metrics.json").read_text())
    assert metrics["run_dir"] is None and metrics["model"] == str(tiny_model_dir)
    assert metrics["prompt_tuning"]["fact_source"].startswith("default")
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["exp1_examples.parquet", "exp1_metrics.json"]


def _copy_model(source: Path, target: Path, keep_tokenizer: bool) -> Path:
    shutil.copytree(source, target, ignore=None if keep_tokenizer else shutil.ignore_patterns("tokenizer*"))
    return target


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_tokenizer", "no tokenizer"),
        ("no_model", "no model in this folder"),
        ("missing_dataset", "dataset"),
        ("hub_revision", "nobody/reversal-exp1@v9.9.9"),
        ("no_run_info", "no run_info.json"),
        ("bad_run_info", "not valid JSON"),
        ("hash_mismatch", "differs from the run's dataset"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str, message: str, tiny_model_dir: Path, exp1_dataset_dir: Path, tmp_path: Path, capsys
) -> None:
    model = _copy_model(tiny_model_dir, tmp_path / "model", keep_tokenizer=case != "no_tokenizer")
    dataset = str(tmp_path / "missing") if case == "missing_dataset" else str(exp1_dataset_dir)
    if case == "no_model":
        (model / "config.json").unlink()
    if case in {"no_run_info", "bad_run_info", "hash_mismatch"}:
        if case != "no_run_info":
            info = {"experiment": "exp1", "dataset": {"name": dataset, "content_hash": "0" * 64}}
            (model / "run_info.json").write_text("{oops" if case == "bad_run_info" else json.dumps(info))
        argv = ["run", str(model)]
    else:
        argv = ["exp1", "--model", str(model), "--dataset", dataset, "--output", str(tmp_path / "out")]
    if case == "hub_revision":  # offline in tests: the Hub cannot confirm the revision, which must not pass silently
        argv = [*argv[:4], "nobody/reversal-exp1", "--revision", "v9.9.9", *argv[5:]]
    assert evaluation.main(argv) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
    assert not (tmp_path / "out").exists() and not (model / "eval").exists()
