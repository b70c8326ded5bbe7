"""Recipes and the launcher: every recipe resolves under --dry-run, and bad input is a one-line error up front."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from reversal_hf import launch, sweep
from reversal_hf.configs import (
    ACCELERATE_CONFIGS_DIR,
    RECIPES_DIR,
    TRL_BACKEND,
    RecipeError,
    list_recipes,
    load_recipe,
    read_recipe,
    recipe_arguments,
)
from reversal_hf.paths import REPO_ROOT

RECIPES = list_recipes(TRL_BACKEND)  # the OpenAI arm's recipes are tested in test_openai_finetune.py


def _is_sweep(name: str) -> bool:
    return bool(read_recipe(name).get("grid"))


@pytest.fixture
def dataset_for(exp1_dataset_dir: Path, exp3_dataset_dir: Path):
    """The built dataset folder of a recipe's experiment (the recipes name build/, which tests do not touch)."""
    folders = {"exp1": exp1_dataset_dir, "exp3": exp3_dataset_dir}
    return lambda name: folders[read_recipe(name)["experiment"]]


def _commands(output: str) -> list[list[str]]:
    return [shlex.split(line) for line in output.splitlines() if " launch " in line]


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_the_issue_recipes_exist():
    expected = {"exp1_tiny", "exp1_smollm2_135m", "exp1_llama7b", "exp1_llama7b_sweep", "exp1_llama7b_prompt_tuning"}
    expected |= {"exp3_tiny", "exp3_smollm2_135m", "exp1_smollm2_135m_prompt_tuning"}
    expected |= {f"exp3_llama{size}{kind}" for size in ("7b", "13b", "30b") for kind in ("", "_sweep")}
    assert expected <= set(RECIPES)
    readme = (RECIPES_DIR / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in RECIPES), "every recipe has a row in recipes/README.md"


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_resolves_under_dry_run(name: str, dataset_for, capsys: pytest.CaptureFixture[str]):
    override = ["--dataset_name", str(dataset_for(name))]
    main = sweep.main if _is_sweep(name) else launch.main
    assert main([name, "--dry-run", "--", *override]) == 0
    out = capsys.readouterr().out
    commands = _commands(out)
    assert commands, out
    recipe = load_recipe(name, override, on_launcher=True)
    for command in commands:
        config_file = command[command.index("--config_file") + 1]
        assert (REPO_ROOT / config_file).is_file() and (REPO_ROOT / config_file).parent == ACCELERATE_CONFIGS_DIR
        assert Path(config_file).stem == recipe.launch_args.accelerate_config
        assert command[command.index("--config") + 1] == f"recipes/{name}.yaml"
        assert int(command[command.index("--num_processes") + 1]) == launch.processes_per_node(recipe)
        assert command[command.index("--config") - 1] == "scripts/sft.py"
    if not _is_sweep(name):
        resolved = yaml.safe_load(out.split(f"# resolved config of {name}\n", 1)[1].split("\n# run ", 1)[0])
        assert resolved["dataset_name"] == str(dataset_for(name))
        configs = recipe.launch_args.dataset_configs  # one run per config, the first printed first
        assert resolved["output_dir"] == (f"outputs/{name}/{configs[0]}" if configs else f"outputs/{name}")
        assert resolved["learning_rate"] == recipe.training_args.learning_rate


def test_llama_recipes_name_the_hub_ids_and_the_paper_grids():
    for size in ("7b", "13b", "30b"):
        assert load_recipe(f"exp3_llama{size}", on_launcher=True).model_args.model_name_or_path == (
            f"huggyllama/llama-{size}"
        )
        grid = load_recipe(f"exp3_llama{size}_sweep", on_launcher=True).launch_args.grid
        assert grid == {"total_batch_size": [8, 32, 128], "learning_rate": [1e-6, 2e-6, 1e-5, 2e-5]}
    exp1 = load_recipe("exp1_llama7b_sweep", on_launcher=True).launch_args
    assert exp1.grid == {"total_batch_size": [1, 4, 16], "learning_rate": [1e-6, 2e-6, 1e-5, 2e-5]}
    tuning = load_recipe("exp1_llama7b_prompt_tuning", on_launcher=True)
    assert tuning.script_args.training_mode == "prompt_tuning" and len(tuning.launch_args.seeds) == 10
    assert tuning.training_args.num_train_epochs == 50 and tuning.training_args.learning_rate == 3e-3
    assert not any(load_recipe(name, on_launcher=True).script_args.mask_prompt for name in RECIPES)


def test_multi_node_dry_run_prints_one_command_per_node(capsys: pytest.CaptureFixture[str], exp3_dataset_dir: Path):
    argv = ["exp3_llama30b", "--dry-run", "--nnodes", "4", "--main-process-ip", "10.0.0.1"]
    assert launch.main([*argv, "--", "--dataset_name", str(exp3_dataset_dir)]) == 0
    commands = _commands(capsys.readouterr().out)
    # One command per node for each instruction order (exp3_llama30b trains both, one after the other).
    assert [c[c.index("--machine_rank") + 1] for c in commands] == ["0", "1", "2", "3"] * 2
    for command in commands:
        assert command[command.index("--num_machines") + 1] == "4"
        assert command[command.index("--num_processes") + 1] == "32"  # 8 per node, accelerate counts all nodes
        assert command[command.index("--main_process_ip") + 1] == "10.0.0.1"


def test_overrides_pass_through_and_win(capsys: pytest.CaptureFixture[str], exp1_dataset_dir: Path):
    overrides = ["--dataset_name", str(exp1_dataset_dir), "--learning_rate", "1e-5", "--seed", "3"]
    assert launch.main(["exp1_tiny", "--dry-run", "--", *overrides]) == 0
    out = capsys.readouterr().out
    assert _commands(out)[0][-len(overrides) :] == overrides
    resolved = yaml.safe_load(out.split("# resolved config of exp1_tiny\n", 1)[1])
    assert (resolved["learning_rate"], resolved["seed"]) == (1e-5, 3)


def test_unknown_recipe_is_a_one_line_error(capsys: pytest.CaptureFixture[str]):
    assert launch.main(["exp9_nothing", "--dry-run"]) == 1
    err = _one_line_error(capsys)
    assert "exp9_nothing" in err and "exp1_tiny" in err


def test_yaml_typo_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    text = (RECIPES_DIR / "exp1_tiny.yaml").read_text().replace("learning_rate:", "lerning_rate:")
    recipe = tmp_path / "typo.yaml"
    recipe.write_text(text)
    assert launch.main([str(recipe), "--dry-run"]) == 1
    err = _one_line_error(capsys)
    assert "'lerning_rate'" in err and "learning_rate" in err.split("did you mean", 1)[1]


def test_a_base_recipes_typo_names_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    base = tmp_path / "base.yaml"
    base.write_text((RECIPES_DIR / "exp1_tiny.yaml").read_text().replace("num_train_epochs:", "num_train_epoch:"))
    recipe = tmp_path / "child.yaml"
    recipe.write_text(f"base: {base}\nlearning_rate: 1.0e-4\n")
    assert launch.main([str(recipe), "--dry-run"]) == 1
    err = _one_line_error(capsys)
    assert str(base) in err and "'num_train_epoch'" in err and "'num_train_epochs'" in err


def test_base_recipes_resolve_with_the_childs_fields_winning(tmp_path: Path):
    assert read_recipe("exp3_llama13b") == {**read_recipe("exp3_llama7b"), "model_name_or_path": "huggyllama/llama-13b"}
    sweep_30b = read_recipe("exp3_llama30b_sweep")
    assert sweep_30b == {**read_recipe("exp3_llama7b_sweep"), "model_name_or_path": "huggyllama/llama-30b"}
    assert sweep_30b["num_train_epochs"] == 5 and sweep_30b["seeds"] == [0] and "base" not in sweep_30b
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(RecipeError, match="cycle"):
        read_recipe(str(tmp_path / "a.yaml"))


def test_plain_trl_parser_parses_a_resolved_recipe(tmp_path: Path):
    """A recipe with a `base:` resolves to a config that TrlParser itself parses to the same arguments."""
    from trl import TrlParser

    resolved = tmp_path / "exp3_llama30b_sweep.yaml"
    resolved.write_text(yaml.safe_dump(read_recipe("exp3_llama30b_sweep")))
    args = ["--config", str(resolved), "--output_dir", "out", "--use_cpu", "true"]
    plain = TrlParser(recipe_arguments()).parse_args_and_config(args)
    recipe = load_recipe("exp3_llama30b_sweep", args[2:])
    assert tuple(plain) == (recipe.script_args, recipe.training_args, recipe.model_args, recipe.launch_args)


def test_launcher_checks_gpu_recipes_without_changing_them():
    """On a CPU host the launcher accepts a bf16 GPU recipe and reports it as the job will parse it (use_cpu false)."""
    recipe = load_recipe("exp3_llama30b", on_launcher=True)
    assert recipe.training_args.bf16 and not recipe.training_args.use_cpu and recipe.training_args.dataloader_pin_memory


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["--dataset_config", "p3d"], "dataset_config"),
        (["--learning_rate", "fast"], "learning_rate"),
        (["--lerning_rate", "1e-5"], "lerning_rate"),
        (["--accelerate_config", "zero9"], "accelerate_config"),
        (["--total_batch_size", "100", "--per_device_train_batch_size", "64"], "total_batch_size"),
        (["--model_name_or_path", "not a model id!"], "model_name_or_path"),
        (["--eval_curves_every", "often"], "eval_curves_every"),
        (["--eval_curves_max_examples", "0"], "eval_curves_max_examples"),
        (["--eval_curves_stop_at_realized", "0.9"], "eval_curves_stop_at_realized"),  # Exp 3 only
        (
            ["--training_mode", "prompt_tuning", "--isolated_padding_free", "false", "--padding_free", "true"],
            "padding_free",
        ),
    ],
)
def test_bad_fields_are_one_line_errors(overrides, field, exp1_dataset_dir: Path, capsys: pytest.CaptureFixture):
    argv = ["exp1_tiny", "--dry-run", "--", "--dataset_name", str(exp1_dataset_dir), *overrides]
    assert launch.main(argv) == 1
    assert field in _one_line_error(capsys)


def test_unreachable_model_fails_before_launching(exp1_dataset_dir: Path, capsys: pytest.CaptureFixture[str]):
    """Offline (conftest), a Hub id that is not cached cannot be trained: refused before accelerate starts."""
    overrides = ["--dataset_name", str(exp1_dataset_dir), "--model_name_or_path", "reversal-tester/no-such-model"]
    assert launch.main(["exp1_tiny", "--", *overrides]) == 1
    assert "reversal-tester/no-such-model" in _one_line_error(capsys)


def test_missing_dataset_folder_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert launch.main(["exp1_tiny", "--dry-run", "--", "--dataset_name", str(tmp_path / "missing")]) == 1
    assert "dataset_name" in _one_line_error(capsys)


def test_train_refuses_a_sweep_recipe(exp1_dataset_dir: Path, capsys: pytest.CaptureFixture[str]):
    assert launch.main(["exp1_llama7b_sweep", "--dry-run", "--", "--dataset_name", str(exp1_dataset_dir)]) == 1
    assert "reversal-hf sweep" in _one_line_error(capsys)


def test_sweep_lists_every_point_and_skips_finished_runs(
    tmp_path: Path, exp1_dataset_dir: Path, capsys: pytest.CaptureFixture[str]
):
    overrides = ["--dataset_name", str(exp1_dataset_dir), "--output_dir", str(tmp_path)]
    finished = tmp_path / "total_batch_size=4_learning_rate=1e-05_seed=42"
    finished.mkdir()
    (finished / "run_info.json").write_text(json.dumps({"recipe": "exp1_llama7b_sweep"}))
    assert sweep.main(["exp1_llama7b_sweep", "--dry-run", "--", *overrides]) == 0
    out = capsys.readouterr().out
    assert "12 runs, 1 finished" in out
    folders = re.findall(r"^\[\d+/12\] (\S+) \((.+)\)$", out, flags=re.MULTILINE)
    assert len({folder for folder, _ in folders}) == 12
    assert dict(folders)[str(finished)] == "finished, skipped"
    commands = _commands(out)
    assert {(c[c.index("--total_batch_size") + 1], c[c.index("--learning_rate") + 1]) for c in commands} == {
        (b, lr) for b in ("1", "4", "16") for lr in ("1e-06", "2e-06", "1e-05", "2e-05")
    }


def test_seed_sweep_runs_one_folder_per_seed(exp1_dataset_dir: Path, capsys: pytest.CaptureFixture[str]):
    assert sweep.main(["exp1_llama7b_prompt_tuning", "--dry-run", "--", "--dataset_name", str(exp1_dataset_dir)]) == 0
    out = capsys.readouterr().out
    assert [c[c.index("--seed") + 1] for c in _commands(out)] == [str(seed) for seed in range(10)]
    assert "outputs/exp1_llama7b_prompt_tuning/seed=9" in out


ORDERS = ["answer_to_question", "question_to_answer"]


@pytest.mark.parametrize("size", ["7b", "13b", "30b"])
def test_exp3_llama_trains_both_orders_in_their_own_folders(
    size: str, exp3_dataset_dir: Path, capsys: pytest.CaptureFixture[str]
):
    assert launch.main([f"exp3_llama{size}", "--dry-run", "--", "--dataset_name", str(exp3_dataset_dir)]) == 0
    out = capsys.readouterr().out
    commands = _commands(out)
    assert [(c[c.index("--dataset_config") + 1], c[c.index("--output_dir") + 1]) for c in commands] == [
        (order, f"outputs/exp3_llama{size}/{order}") for order in ORDERS
    ]
    assert [line for line in out.splitlines() if line.startswith("# run ")] == [
        f"# run outputs/exp3_llama{size}/{order}" for order in ORDERS
    ]


def test_one_order_is_picked_with_dataset_configs(exp3_dataset_dir: Path, capsys: pytest.CaptureFixture[str]):
    overrides = ["--dataset_name", str(exp3_dataset_dir)]
    assert launch.main(["exp3_llama30b", "--dry-run", "--", *overrides, "--dataset_configs", ORDERS[1]]) == 0
    assert [c[c.index("--output_dir") + 1] for c in _commands(capsys.readouterr().out)] == [
        f"outputs/exp3_llama30b/{ORDERS[1]}"
    ]
    assert launch.main(["exp3_llama30b", "--dry-run", "--", *overrides, "--dataset_config", ORDERS[1]]) == 1
    assert "--dataset_configs" in _one_line_error(capsys)


def test_exp3_sweeps_cover_both_orders(exp3_dataset_dir: Path, capsys: pytest.CaptureFixture[str]):
    assert sweep.main(["exp3_llama30b_sweep", "--dry-run", "--", "--dataset_name", str(exp3_dataset_dir)]) == 0
    out = capsys.readouterr().out
    assert "24 runs" in out
    for order in ORDERS:
        runs = [c for c in _commands(out) if c[c.index("--dataset_config") + 1] == order]
        assert len(runs) == 12
        assert all(c[c.index("--output_dir") + 1].startswith(f"outputs/exp3_llama30b_sweep/{order}/") for c in runs)
    assert sweep.main(["exp3_llama7b", "--dry-run", "--", "--dataset_name", str(exp3_dataset_dir)]) == 0
    out = capsys.readouterr().out
    assert "10 runs" in out and f"outputs/exp3_llama7b/{ORDERS[1]}/seed=4" in out


def test_exp1_llama7b_runs_the_papers_three_seeds(exp1_dataset_dir: Path, capsys: pytest.CaptureFixture[str]):
    assert sweep.main(["exp1_llama7b", "--dry-run", "--", "--dataset_name", str(exp1_dataset_dir)]) == 0
    assert len({c[c.index("--seed") + 1] for c in _commands(capsys.readouterr().out)}) == 3


def test_slurm_script_runs_one_launcher_per_node():
    script = RECIPES_DIR / "launch.slurm"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "--ntasks-per-node=1" in text and "--machine-rank" in text and "SLURM_NODEID" in text
