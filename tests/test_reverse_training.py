"""Reverse training wired in: recipe fields, the training set `train.py` builds, the leak check on transformed data,
reverse-mode evaluation, the model card, and the `mitigate` study's report."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from reversal_hf import mitigate
from reversal_hf.configs import RecipeError, load_recipe
from reversal_hf.data import leak_check
from reversal_hf.data.exp1_schema import SPLITS as EXP1_SPLITS
from reversal_hf.data.leak_check import LeakError, read_splits
from reversal_hf.data.reversal.questions import reverse_mode_questions, token_reverse_mode_question
from reversal_hf.data.reversal.text import EXP1_ENTITIES, TextReversal
from reversal_hf.evaluation import reverse_mode
from reversal_hf.evaluation.backends import BatchedRunner
from reversal_hf.evaluation.data import Exp1Data, load_split
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.model_card import build_model_card
from reversal_hf.paths import REPO_ROOT
from reversal_hf.reporting.tables import likelihood_table
from reversal_hf.train import TrainError, load_train_dataset

TEXT_RECIPES = {
    "word": "exp1_tiny_reverse_word",
    "entity": "exp1_tiny_reverse_entity",
    "segment": "exp1_tiny_reverse_segment",
}


def recipe_on(name: str, dataset_dir: Path, *overrides: str):
    return load_recipe(name, ["--dataset_name", str(dataset_dir), *overrides], on_launcher=True)


# ---------------------------------------------------------------- recipes


@pytest.mark.parametrize(
    ("name", "transform", "base_model"),
    [
        *((recipe, kind, "tiny-exp1") for kind, recipe in TEXT_RECIPES.items()),
        ("exp1_tiny_both_orders", "both_orders", "tiny-exp1"),
        ("exp1_smollm2_135m_reverse_entity", "entity", "smollm2-135m"),
        ("exp3_smollm2_135m_reverse_entity", "entity", "smollm2-135m"),
    ],
)
def test_reverse_recipes_are_their_base_plus_one_field(name: str, transform: str, base_model: str) -> None:
    recipe = load_recipe(name, on_launcher=True)
    assert recipe.script_args.reversal_transform == transform
    assert recipe.model_args.model_name_or_path == base_model
    assert recipe.resolved_config()["reversal_transform"] == transform  # what run_info records


def test_bad_reversal_fields_are_one_line_errors() -> None:
    with pytest.raises(RecipeError, match="invalid choice: 'letters'"):
        load_recipe("exp1_tiny", ["--reversal_transform", "letters"], on_launcher=True)
    with pytest.raises(RecipeError, match="both_orders works on Experiment 1 data only"):
        load_recipe("exp3_tiny", ["--reversal_transform", "both_orders"], on_launcher=True)
    with pytest.raises(RecipeError, match="did you mean 'reversal_seed'"):
        load_recipe("exp1_tiny", ["--reversal_sed", "1"], on_launcher=True)


# ---------------------------------------------------------------- the training set


@pytest.mark.parametrize("kind", sorted(TEXT_RECIPES))
def test_reversed_rows_of_a_fact_never_land_in_another_facts_document(exp1_dataset_dir: Path, kind: str) -> None:
    recipe = recipe_on(TEXT_RECIPES[kind], exp1_dataset_dir, "--dataset_config", "p2d")
    original = load_split(str(exp1_dataset_dir), "p2d", "train")
    trained = load_train_dataset(recipe)
    n = len(original)
    assert trained.column_names == ["prompt", "completion"] and len(trained) == 2 * n
    names = set(original["name"])
    separator = recipe.script_args.reversal_separator
    for row, document in zip(original, trained.select(range(n, 2 * n)), strict=True):
        text = document["prompt"] + document["completion"]
        assert document["prompt"] == ""
        assert Counter(w for w in text.split() if w != separator) == Counter(
            (row["prompt"] + row["completion"]).split()
        )
        others = [name for name in names - {row["name"]} if name in text or TextReversal("word").apply(name) in text]
        assert others == []


def test_token_transform_trains_on_token_ids(exp1_dataset_dir: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    recipe = recipe_on("exp1_tiny", exp1_dataset_dir, "--reversal_transform", "token", "--max_train_samples", "3")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trained = load_train_dataset(recipe, tokenizer)
    assert trained.column_names == ["input_ids", "completion_mask"] and len(trained) == 6
    forward, backward = trained[0]["input_ids"], trained[3]["input_ids"]
    assert backward[0] == forward[0] == tokenizer.bos_token_id and backward[1:-1] == forward[1:-1][::-1]
    with pytest.raises(TrainError, match="token needs the model's tokenizer"):
        load_train_dataset(recipe)


def test_both_orders_selects_after_max_train_samples(exp1_dataset_dir: Path) -> None:
    recipe = recipe_on("exp1_tiny_both_orders", exp1_dataset_dir, "--dataset_config", "p2d", "--max_train_samples", "2")
    trained = load_train_dataset(recipe)
    assert len(trained) == 2 + 30  # the one fact of those two rows, in the 30 held-in templates of the other order


# ---------------------------------------------------------------- the leak check on transformed data


@pytest.mark.parametrize("kind", ["word", "entity", "segment", "token", "both_orders"])
def test_a_transformed_dataset_still_passes_the_leak_check(exp1_dataset_dir: Path, kind: str) -> None:
    leak_check.check_folder(exp1_dataset_dir, "exp1", kind, seed=3)


@pytest.mark.parametrize("kind", ["word", "both_orders"])
def test_a_held_out_prompt_in_a_training_document_is_caught_after_the_transform(
    exp1_dataset_dir: Path, kind: str
) -> None:
    splits = read_splits(exp1_dataset_dir, EXP1_SPLITS)
    held_out = splits[("p2d", "test")][0]
    train = splits[("p2d", "train")]
    # word: the held-out prompt written reversed; both_orders: as it is. Either way it reaches training.
    planted = TextReversal("word").apply(held_out["prompt"]) if kind == "word" else held_out["prompt"]
    splits[("p2d", "train")] = [*train, {**train[0], "completion": train[0]["completion"] + " " + planted}]
    leaks = leak_check.find_leaks("exp1", splits, kind)
    assert any(f"{held_out['prompt']!r} is in a training split" in leak for leak in leaks)


def test_an_exp3_run_stops_on_a_test_query_its_transform_puts_in_training(
    exp3_dataset_dir: Path, tmp_path: Path
) -> None:
    """The job's check reads the recipe's dataset folder: a planted test query, written reversed, stops the run."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from reversal_hf.train import check_reversed_leaks

    folder = shutil.copytree(exp3_dataset_dir, tmp_path / "exp3")
    recipe = recipe_on("exp3_smollm2_135m_reverse_entity", folder)
    check_reversed_leaks(recipe)  # the data as built: no leak
    config = recipe.script_args.dataset_config
    query = read_splits(folder)[(config, "test")][0]
    shard = next((folder / "data" / config).glob("train-*.parquet"))
    table = pq.read_table(shard)
    planted = {**table.slice(0, 1).to_pylist()[0], "completion": TextReversal("entity").apply(query["prompt"])}
    pq.write_table(pa.concat_tables([table, pa.Table.from_pylist([planted], schema=table.schema)]), shard)
    with pytest.raises(TrainError, match=r"^reversal_transform entity: 1 leak\(s\) into training, first: "):
        check_reversed_leaks(recipe)


def test_leak_check_rejects_an_unknown_transform(exp1_dataset_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown transform 'letters'"):
        leak_check.check_folder(exp1_dataset_dir, "exp1", "letters")
    assert issubclass(LeakError, ValueError)


def test_a_too_long_reversed_document_is_caught_by_the_truncation_check(
    exp1_dataset_dir: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`segment` puts a separator between segments, so a reversed document can outgrow a max_length its original
    fits: the launcher's check sees the transformed set, and stops before any process starts."""
    from transformers import AutoTokenizer

    from reversal_hf import launch
    from reversal_hf.truncation import document_lengths

    overrides = ["--dataset_name", str(exp1_dataset_dir), "--model_name_or_path", str(tiny_model_dir)]
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    longest_original = max(document_lengths(load_train_dataset(load_recipe("exp1_tiny", overrides)), tokenizer))
    fitting = [*overrides, "--max_length", str(longest_original)]
    assert launch.main(["exp1_tiny", "--dry-run", "--", *fitting]) == 0
    capsys.readouterr()
    assert launch.main(["exp1_tiny_reverse_segment", "--dry-run", "--", *fitting]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the `datasets` progress bars
    assert error.startswith("error: exp1_tiny_reverse_segment: ")
    assert f"longer than max_length {longest_original} tokens" in error


# ---------------------------------------------------------------- reverse-mode evaluation


class NameRunner:
    """Answers every reverse-mode question right (its completion), and scores the right completion higher."""

    def __init__(self, truth: dict[str, str]):
        self.truth = truth

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        return [self.truth.get(prompt, " nobody") for prompt in prompts]

    def scores(self, prompts: Sequence[str], completions: Sequence[str]) -> list[tuple[float, int]]:
        return [(-1.0 if self.truth.get(p) == c else -5.0, 1) for p, c in zip(prompts, completions, strict=True)]

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return [-total / count for total, count in self.scores(prompts, completions)]

    def token_count(self, text: str) -> int:
        return len(text.split())


@pytest.mark.parametrize("kind", ["word", "entity", "segment"])
def test_reverse_mode_questions_are_scored_apart_and_leave_out_what_training_gives_away(
    exp1_dataset_dir: Path, kind: str
) -> None:
    data = Exp1Data.load(str(exp1_dataset_dir), None)
    reversal = reverse_mode.run_reversal({"resolved_config": {"reversal_transform": kind, "reversal_seed": 1}})
    training = load_split(str(exp1_dataset_dir), "all", "train")
    entities = EXP1_ENTITIES if kind == "entity" else None
    truth = {
        q["prompt"]: q["completion"]
        for key in reverse_mode.REVERSE_MODE_SPLITS
        for q in reverse_mode_questions(data.full[key].to_dict("records"), reversal, entities)
    }
    metrics, table = reverse_mode.evaluate_reverse_mode(data, NameRunner(truth), reversal, training)
    assert metrics["transform"] == kind and set(metrics["exact_match"]) == set(reverse_mode.REVERSE_MODE_SPLITS)
    assert set(table["split"]) == {f"reverse_mode/{key}" for key in reverse_mode.REVERSE_MODE_SPLITS}
    for key in reverse_mode.REVERSE_MODE_SPLITS:
        excluded = metrics["excluded"][key]
        assert metrics["exact_match"][key] == {"accuracy": 1.0, "n": len(data.full[key]) - excluded["n"]}
        assert metrics["likelihood"][key]["significant"]
    # The paper's template 39 cut before the name reads like training template 17 (word and entity; p2d facts); a
    # segment question that ends early (a few description segments) can stand in a training document too.
    left_out = {template for excluded in metrics["excluded"].values() for template in excluded["templates"]}
    assert left_out == {39} if kind != "segment" else left_out
    assert sum(excluded["n"] for excluded in metrics["excluded"].values()) < 0.1 * len(data.full["p2d/test"])
    assert not table["random_is_correct"].any()


def test_token_reverse_mode_questions_are_asked_in_token_ids(
    exp1_dataset_dir: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that answers every reversed question with the name's reversed tokens scores 100%; the likelihood test
    runs on the real tiny model; no question stands in a token-reversed training document."""
    from reversal_hf.evaluation.loading import load_model_and_tokenizer

    data = Exp1Data.load(str(exp1_dataset_dir), None, max_examples_per_split=6)
    training = load_split(str(exp1_dataset_dir), "all", "train")
    model, tokenizer = load_model_and_tokenizer(tiny_model_dir)
    names = {
        tuple(prompt): completion
        for key in reverse_mode.REVERSE_MODE_SPLITS
        for row in data.splits[key].itertuples()
        for prompt, completion in [token_reverse_mode_question(row.prompt + row.completion, row.name, tokenizer)]
    }

    def oracle(model, encoded, pad_token_id, max_new_tokens, batch_size, description):
        return [names[tuple(prompt)] + [pad_token_id] * 3 for prompt in encoded]

    monkeypatch.setattr(reverse_mode, "greedy_generate_ids", oracle)
    metrics, table = reverse_mode.evaluate_token_reverse_mode(data, BatchedRunner(model, tokenizer), training)
    assert metrics["transform"] == "token"
    for key in reverse_mode.REVERSE_MODE_SPLITS:
        assert metrics["exact_match"][key] == {"accuracy": 1.0, "n": 6}
        assert metrics["excluded"][key] == {"n": 0, "templates": []}
        assert set(metrics["likelihood"][key]) >= {"ttest_pvalue", "ks_pvalue"}
    assert (table["generation"].str.strip() == table["correct_completion"]).all()
    assert not table["random_is_correct"].any()
    with pytest.raises(EvaluationError, match="need a local model"):
        reverse_mode.evaluate_token_reverse_mode(data, NameRunner({}), training)


def test_runs_without_a_text_transform_get_no_reverse_mode() -> None:
    assert reverse_mode.run_reversal(None) is None
    assert reverse_mode.run_reversal({"resolved_config": {"reversal_transform": None}}) is None
    assert reverse_mode.run_reversal({"resolved_config": {"reversal_transform": "both_orders"}}) is None


def card_of_run(run_dir: Path, recipe: str, model: str, resolved_config: dict):
    """The model card of a finished Exp 1 run folder whose run_info.json says only what a card reads."""
    run_info = {
        "recipe": recipe,
        "experiment": "exp1",
        "training_mode": "full",
        "model_name_or_path": model,
        "dataset": {"name": "build/datasets/reversal-exp1", "config": "all"},
        "seed": 0,
        "resolved_config": resolved_config,
    }
    (run_dir / "run_info.json").write_text(json.dumps(run_info))
    return build_model_card(run_dir)


def test_model_card_names_the_transform(tmp_path: Path) -> None:
    card = card_of_run(tmp_path, "exp1_tiny_reverse_entity", "tiny-exp1", {"reversal_transform": "entity"})
    assert "reverse-training-entity" in card.data.tags and "| reverse training (`reversal_transform`) | `entity` |" in (
        card.text
    )


def test_model_card_says_what_smollm2_is(tmp_path: Path) -> None:
    """The local SmolLM2 is the Instruct model, dequantized from a Q4_1 GGUF: no card passes it off as a base."""
    card = card_of_run(
        tmp_path, "exp1_smollm2_135m", "build/models/smollm2-135m", {"model_name_or_path": "smollm2-135m"}
    )
    assert "SmolLM2-135M-Instruct" in card.text and "Q4_1" in card.text and "not a base model" in card.text


# ---------------------------------------------------------------- the study


def fake_metrics(same: float, reverse: float, reverse_mode: float | None) -> dict:
    exact = {
        split: {"accuracy": same if "reverse" not in split else reverse, "n": 10} for split in mitigate.FORWARD.values()
    }
    likelihood = {f"{s}/reverse_test": {"ttest_pvalue": 0.01, "ks_pvalue": 0.02} for s in ("p2d", "d2p")}
    metrics = {"experiment": "exp1", "exact_match": exact, "likelihood": likelihood}
    if reverse_mode is not None:
        metrics["reverse_mode"] = {
            "exact_match": {split: {"accuracy": reverse_mode, "n": 9} for split in mitigate.REVERSE_MODE.values()},
            "excluded": {"p2d/test": {"n": 30, "templates": [39]}},
        }
    return metrics


def test_study_methods_match_data_and_compute() -> None:
    methods = {method.name: method for method in mitigate.study_methods()}
    assert methods["baseline_2x_epochs"].overrides == ("--num_train_epochs", "16")  # exp1_tiny trains 8
    assert {"word", "entity", "segment", "token", "mlm_u", "both_orders"} <= set(methods)
    assert (methods["mlm_u"].recipe, methods["mlm_u"].overrides) == ("exp1_tiny_mlm_u", ())  # the baseline's epochs
    assert "rows of 48 tokens" in methods["mlm_u"].matching
    with pytest.raises(mitigate.ReproduceError, match="unknown method 'letters'"):
        mitigate.select_methods(["letters"])


def test_study_report_has_the_table_the_verdicts_and_the_figure(tmp_path: Path) -> None:
    rows = []
    methods = (("baseline", 0.9, 0.0, None), ("entity", 0.9, 0.85, 0.7), ("both_orders", 0.9, 0.9, None))
    for name, same, reverse, reverse_mode_accuracy in methods:
        method = next(m for m in mitigate.study_methods() if m.name == name)
        runs = {}
        for seed in range(2):
            run_dir = tmp_path / "runs" / f"{name}-seed{seed}"
            run_dir.mkdir(parents=True)
            (run_dir / "run_info.json").write_text(json.dumps({"train_tokens": 1000 * (seed + 1)}))
            runs[str(run_dir)] = mitigate.run_numbers(run_dir, fake_metrics(same, reverse, reverse_mode_accuracy))
        metrics = fake_metrics(same, reverse, reverse_mode_accuracy)
        rows.append(
            {**mitigate.summarize(method, runs), "excluded": (metrics.get("reverse_mode") or {}).get("excluded", {})}
        )
    for row in rows:
        row["target"] = mitigate.target_check(row, rows[0], rows[2])
    # Judged against the oracle's reverse accuracy (no per-example tables here: the point ratio, no interval).
    ratio = {"ratio": pytest.approx(0.85 / 0.9), "low": None, "high": None}
    assert rows[1]["target"] == {
        "oracle_ratio": {"p2d": ratio, "d2p": ratio},
        "same_direction_kept": {"p2d": True, "d2p": True},
        "met": True,
    }
    assert not rows[0]["target"]["met"]
    assert "the tiny model trained from scratch (8 epochs, lr 0.003, batch 64)" in rows[0]["matching"]
    data = {
        "generated_by": "test",
        "generated_at": "now",
        "seeds": 2,
        "quick": False,
        "methods": rows,
        "machine": {"cpu": "AMD EPYC", "cpu_capability": "AVX512", "torch_threads": 2},
        "git_commit": ["0123456789abcdef"],
        "wall_time_s": 1.0,
        "timeline": {"seconds": 3600.0, "steps": 4, "dates": ["2026-11-26", "2026-11-27"]},
    }
    report = mitigate.write_report(data, tmp_path / "out")
    text = report.read_text()
    assert (
        "(1 s; AMD EPYC, torch CPU capability AVX512, 2 threads; runs at commit 0123456789; 3600 s of steps over "
        "2026-11-26, 2026-11-27)" in text
    )
    assert "| entity | data-matched" in text and "| 85.0 ± 0.0 |" in text and "paper: GPT-3-175B" in text
    assert "`entity` meets the target" in text and "`entity` p2d/test: 30 (templates 39)" in text
    assert "`both_orders` meets" not in text and "does not meet" not in text  # the oracle is not judged
    assert (tmp_path / "out" / "mitigations.png").stat().st_size > 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["methods"][1]["p2d/reverse"]["mean"] == 0.85


def test_study_pools_each_methods_likelihood_over_seeds_with_holm_across_methods(tmp_path: Path) -> None:
    """Per method and split: per-fact differences averaged over seeds, then one t-test across facts (scipy's), with
    Holm's correction over every method × split of the study."""
    from scipy import stats

    facts = ["A", "B", "C", "D", "E"]
    differences = {"baseline": [-1.0, 0.5, 0.25, -0.5, 1.0], "entity": [2.0, 1.5, 3.0, 2.5, 1.0]}
    rows = []
    for method, base in differences.items():
        run_dirs = []
        for seed in range(2):
            run_dir = tmp_path / f"{method}-seed{seed}"
            per_fact = [d + (0.5 if seed else -0.5) for d in base]  # averages back to `base`
            test = {
                "facts": facts,
                "n_random_per_fact": 4,
                "differences": per_fact,
                "per_token": {"differences": [d / 2 for d in per_fact]},
            }
            metrics = {"experiment": "exp1", "exact_match": {}, "likelihood": {"p2d/reverse_test": test}}
            (run_dir / "eval").mkdir(parents=True)
            (run_dir / "eval" / "exp1_metrics.json").write_text(json.dumps(metrics))
            run_dirs.append(str(run_dir))
        rows.append({"method": method, "run_dirs": run_dirs})

    groups = mitigate.method_groups(rows)
    table = likelihood_table(groups)
    assert mitigate.likelihood_design(groups) == "every other fact's under the template (≥ 4 per prompt)"
    pvalues = [stats.ttest_1samp(base, 0.0).pvalue for base in differences.values()]
    holm = sorted(pvalues)[0] * 2, max(sorted(pvalues)[0] * 2, sorted(pvalues)[1])
    for group, base, pvalue in zip(table, differences.values(), pvalues, strict=True):
        (test,) = group["tests"]
        pooled = test["pooled"]["summed"]
        assert (pooled["n"], pooled["n_seeds"]) == (5, 2)
        assert pooled["mean_difference"] == pytest.approx(sum(base) / 5)
        assert pooled["ttest_pvalue"] == pytest.approx(pvalue)
        assert pooled["ttest_pvalue_holm"] == pytest.approx(holm[sorted(pvalues).index(pvalue)])
    assert [group["group"].split(" ")[0] for group in table] == ["baseline", "entity"]


@pytest.mark.slow
def test_make_mitigate_quick_writes_the_study_report(tmp_path: Path) -> None:
    """`make mitigate QUICK=1` (one seed, a few steps) on four methods: the baseline, a text transform and `token`
    (pre-tokenized rows), both with reverse-mode questions, and MLM-U (a masked LM, its own trainer and runner);
    without `--methods` it runs all eight."""
    out = tmp_path / "mitigations"
    methods = ["baseline", "entity", "token", "mlm_u"]
    result = subprocess.run(
        ["make", "-s", "mitigate", "QUICK=1", f"MITIGATE_OUT={out}", f"MITIGATE_ARGS=--methods {' '.join(methods)}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "report.json").read_text())
    assert [row["method"] for row in data["methods"]] == methods
    for row in data["methods"]:
        assert all(0.0 <= row[column]["mean"] <= 1.0 for column in mitigate.FORWARD)
        assert (row["reverse_mode/p2d"] is not None) == (row["method"] in ("entity", "token"))
    assert "reverse-mode p2d" in (out / "report.md").read_text() and (out / "mitigations.png").is_file()
    mlm_u = json.loads((out / "runs" / "mlm_u-seed0" / "run_info.json").read_text())
    assert mlm_u["training_mode"] == "mlm_u" and mlm_u["train_steps"] == 8
    assert "ModernBertForMaskedLM" in (out / "runs" / "mlm_u-seed0" / "config.json").read_text()
