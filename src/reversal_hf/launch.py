"""`reversal-hf train <recipe>`: validate a recipe, prepare its model, and run it through `accelerate launch`.

Everything that can fail cheaply (unknown recipe or field, missing dataset config, unreachable model) fails here
with one line, before any process group, model or dataset is loaded. `--dry-run` prints the exact command(s) and
the resolved config; `--nnodes N` prints one command per node (the DeepSpeed "standard" multi-node launcher: each
node runs its own `accelerate launch`, which is what `recipes/launch.slurm` does with `--machine-rank`). A recipe
with `dataset_configs` (both Exp 3 instruction orders) starts one run per config, one after the other, each in
`<output_dir>/<config>/`.

`--hub_token` never reaches a command line: the launcher hands it to its jobs as `HF_TOKEN`, so neither `--dry-run`,
`ps` nor the job's saved arguments show it. SIGTERM or SIGINT to the launcher reaches every process it started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from reversal_hf import run_folder
from reversal_hf.command import CommandFailed, run_command
from reversal_hf.configs import Recipe, RecipeError, accelerate_config_path, gradient_accumulation_steps, load_recipe
from reversal_hf.files import read_yaml
from reversal_hf.hub import HubError, PushTarget, sweep_revision
from reversal_hf.paths import REPO_ROOT

SFT_SCRIPT = Path("scripts/sft.py")
DEFAULT_MAIN_PROCESS_PORT = 29500
HUB_TOKEN_FLAG = "--hub_token"
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """`[launcher args] -- [recipe overrides]` → both halves (the Makefile always passes the `--`)."""
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1 :]
    return argv, []


def _repo_relative(path: Path) -> str:
    """Paths inside the repository are printed relative to it (the command runs from the repository root)."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def processes_per_node(recipe: Recipe) -> int:
    if recipe.launch_args.num_processes is not None:
        return recipe.launch_args.num_processes
    return int(read_yaml(accelerate_config_path(recipe.launch_args.accelerate_config)).get("num_processes", 1))


def local_dataset_dir(dataset_name: str) -> Path | None:
    """The dataset's folder when it is one (relative names are relative to the repository root)."""
    path = REPO_ROOT / dataset_name
    return path if path.is_dir() else None


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def check_dataset(recipe: Recipe, *, dry_run: bool) -> None:
    """The dataset config and split exist: read from a local folder, or asked of the Hub (skipped in a dry run)."""
    args = recipe.script_args
    if not args.dataset_name:
        raise RecipeError("dataset_name: not set")
    folder = local_dataset_dir(args.dataset_name)
    if folder is not None:
        configs = sorted(p.name for p in (folder / "data").glob("*") if p.is_dir())
    elif not _is_hub_id(args.dataset_name):
        raise RecipeError(f"dataset_name: folder {args.dataset_name!r} not found (run `make data`)")
    elif dry_run:
        return
    else:
        from datasets import get_dataset_config_names

        try:
            configs = get_dataset_config_names(args.dataset_name, revision=args.dataset_revision)
        except Exception as error:  # offline, missing, gated: all mean "cannot train on it from here"
            raise RecipeError(f"dataset_name: {args.dataset_name!r} unreachable ({type(error).__name__})") from error
    if args.dataset_config not in configs:
        raise RecipeError(
            f"dataset_config: {args.dataset_config!r} not in {args.dataset_name} (configs: {', '.join(configs)})"
        )
    if folder is not None and not any((folder / "data" / args.dataset_config).glob(f"{args.dataset_train_split}-*")):
        raise RecipeError(f"dataset_train_split: no {args.dataset_train_split!r} split in {args.dataset_config}")


def check_model(recipe: Recipe, *, dry_run: bool) -> None:
    """A registered name is prepared (not in a dry run), a folder must hold a model, a Hub id must be reachable."""
    from reversal_hf import models

    name = recipe.model_args.model_name_or_path
    if not name:
        raise RecipeError("model_name_or_path: not set")
    if name in models.REGISTRY:
        if not dry_run:
            try:
                check_model_files(Path(models.resolve_model(name)))
            except models.ModelPrepareError as error:
                raise RecipeError(f"model_name_or_path: {error}") from error
        return
    if (REPO_ROOT / name).is_dir():
        if not (REPO_ROOT / name / "config.json").is_file():
            raise RecipeError(f"model_name_or_path: folder {name!r} has no config.json")
        check_model_files(REPO_ROOT / name)
        return
    if not _is_hub_id(name):
        registered = ", ".join(models.REGISTRY)
        raise RecipeError(f"model_name_or_path: {name!r} is not a registered model ({registered}), folder or Hub id")
    if not dry_run:
        _check_hub_model(name, recipe.model_args.model_revision)


def check_model_files(folder: Path) -> None:
    try:
        run_folder.check_model_files(folder)
    except run_folder.ModelFilesError as error:
        raise RecipeError(f"model_name_or_path: {error}") from error


def check_output(recipe: Recipe) -> None:
    """The output folder can be written, and a run that pushes can push (`train.push_target`: token, reachable Hub,
    repository id, writable namespace, branch name), before it trains; in a dry run too."""
    try:
        run_folder.check_output_dir(recipe.training_args.output_dir)
    except run_folder.OutputDirError as error:
        raise RecipeError(f"output_dir: {error}") from error
    checked_push_target(recipe)


def checked_push_target(recipe: Recipe) -> PushTarget | None:
    """`train.push_target` with its refusals as the launcher's one-line `RecipeError`."""
    from reversal_hf.train import TrainError, push_target

    try:
        return push_target(recipe.training_args)
    except (HubError, TrainError) as error:
        raise RecipeError(str(error)) from error


def run_push_overrides(
    target: PushTarget | None, point: dict[str, Any], seed: int, dataset_config: str | None
) -> list[str]:
    """A recipe that trains several runs pushes each to the recipe's repository, on its own branch
    (`hub.sweep_revision`, after the recipe's `hub_revision` when it names one)."""
    if target is None:
        return []
    branch = sweep_revision(point, seed, dataset_config)
    if target.revision != "main":
        branch = f"{target.revision}-{branch}"
    return ["--hub_model_id", target.repo_id, "--hub_revision", branch]


def _check_hub_model(repo_id: str, revision: str | None) -> None:
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    if constants.is_offline_mode():
        if not isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str):
            raise RecipeError(f"model_name_or_path: {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is set")
        return
    try:
        HfApi().model_info(repo_id, revision=revision)
    except Exception as error:  # not found, gated without a token, or no network
        raise RecipeError(f"model_name_or_path: {repo_id!r} unreachable ({type(error).__name__})") from error


def local_model_dir(name: str) -> Path | None:
    """The folder of a model prepared on this machine (a registered name once prepared, or a model folder)."""
    from reversal_hf import models, paths

    folder = paths.MODELS_DIR / name if name in models.REGISTRY else REPO_ROOT / name
    return folder if (folder / "config.json").is_file() else None


def check_training_documents(recipe: Recipe, *, dry_run: bool) -> None:
    """No training document longer than `max_length` (`reversal_hf.truncation`), for models prepared here.

    A Hub model's tokenizer, a registered model that a dry run finds not yet prepared, and a Hub dataset in a dry run
    are not fetched here: the job checks at start-up, and a note says that this check did not run.
    """
    from reversal_hf import models

    args = recipe.script_args
    name = recipe.model_args.model_name_or_path
    folder = local_model_dir(name)
    if folder is None:
        unchecked = f"{name} is not prepared yet" if name in models.REGISTRY else f"{name} is a Hub model"
    elif dry_run and local_dataset_dir(args.dataset_name) is None:
        unchecked = f"{args.dataset_name} is a Hub dataset"
    else:
        unchecked = None
    if unchecked is not None:
        print(
            f"note: {recipe.name}: document lengths not checked here ({unchecked}); the job checks them at start-up",
            file=sys.stderr,
        )
        return
    from transformers import AutoTokenizer

    from reversal_hf.train import load_train_dataset
    from reversal_hf.truncation import check_document_lengths

    tokenizer = AutoTokenizer.from_pretrained(str(folder), revision=recipe.model_args.model_revision)
    check_document_lengths(recipe, load_train_dataset(recipe, tokenizer), tokenizer)


def check_batch_size(recipe: Recipe, world_size: int) -> None:
    total = recipe.script_args.total_batch_size
    if total is not None:
        gradient_accumulation_steps(total, recipe.training_args.per_device_train_batch_size, world_size)


def accelerate_executable() -> str:
    """The `accelerate` beside this interpreter (the venv's), so the printed command is the one that runs."""
    local = Path(sys.executable).parent / "accelerate"
    return str(local) if local.is_file() else "accelerate"


def build_commands(
    recipe: Recipe,
    *,
    nnodes: int = 1,
    main_process_ip: str = "127.0.0.1",
    main_process_port: int = DEFAULT_MAIN_PROCESS_PORT,
) -> list[list[str]]:
    """One `accelerate launch` command per node (machine rank 0..nnodes-1), each read by accelerate's own launch
    parser (as `trl` launches its scripts): what is printed and run is what `accelerate launch` takes."""
    from accelerate.commands.launch import launch_command_parser

    config_file = _repo_relative(accelerate_config_path(recipe.launch_args.accelerate_config))
    # accelerate counts the processes of every node; --quiet: a job that stops with its one `error:` line is not
    # wrapped in accelerate's traceback of the launch.
    head = ["--quiet", "--config_file", config_file, "--num_processes", str(processes_per_node(recipe) * nnodes)]
    nodes = [
        ["--num_machines", str(nnodes), "--machine_rank", str(rank), "--main_process_ip", main_process_ip]
        + ["--main_process_port", str(main_process_port)]
        for rank in range(nnodes)
    ]
    script = [str(SFT_SCRIPT), "--config", _repo_relative(recipe.path), *recipe.overrides]
    commands = [[*head, *node, *script] for node in nodes] if nnodes > 1 else [[*head, *script]]
    for arguments in commands:
        launch_command_parser().parse_args(arguments)
    return [[accelerate_executable(), "launch", *arguments] for arguments in commands]


def prepare(recipe_name: str, overrides: list[str], *, nnodes: int, dry_run: bool, sweep: bool = False) -> Recipe:
    """Parse and check a recipe (and prepare its model unless `dry_run`): every one-line error happens here."""
    recipe = load_recipe(recipe_name, overrides, on_launcher=True)
    if recipe.launch_args.grid and not sweep:
        raise RecipeError(f"{recipe.name} is a sweep recipe (it has a grid): run `reversal-hf sweep {recipe.name}`")
    accelerate_config_path(recipe.launch_args.accelerate_config)
    check_batch_size(recipe, processes_per_node(recipe) * nnodes)
    check_dataset(recipe, dry_run=dry_run)
    check_model(recipe, dry_run=dry_run)
    check_output(recipe)
    check_training_documents(recipe, dry_run=dry_run)
    return recipe


def per_config_overrides(recipe: Recipe) -> list[list[str]]:
    """The overrides of each run of a recipe: one per `dataset_configs` entry, in `<output_dir>/<config>/` (pushed to
    the recipe's repository, on the config's own branch)."""
    if not recipe.launch_args.dataset_configs:
        return [[]]
    base = Path(recipe.training_args.output_dir)
    target = checked_push_target(recipe)
    return [
        [
            *("--dataset_config", config, "--output_dir", str(base / config)),
            *run_push_overrides(target, {}, recipe.training_args.seed, config),
        ]
        for config in recipe.launch_args.dataset_configs
    ]


def prepare_runs(recipe_name: str, overrides: list[str], *, nnodes: int, dry_run: bool) -> list[Recipe]:
    """Each run `reversal-hf train` starts for a recipe (see `per_config_overrides`), all checked before the first."""
    recipe = load_recipe(recipe_name, overrides, on_launcher=True)
    if recipe.launch_args.dataset_configs and any(arg.split("=")[0] == "--dataset_config" for arg in overrides):
        configs = " ".join(recipe.launch_args.dataset_configs)
        raise RecipeError(
            f"dataset_config: {recipe.name} trains each of dataset_configs ({configs}); pick with "
            "--dataset_configs <config> ..."
        )
    return [
        prepare(recipe_name, [*overrides, *extra], nnodes=nnodes, dry_run=dry_run)
        for extra in per_config_overrides(recipe)
    ]


def format_dry_run(recipe: Recipe, commands: list[list[str]], *, name_run: bool = False) -> str:
    lines = [f"# run {recipe.training_args.output_dir}"] if name_run else []
    for rank, command in enumerate(commands):
        if len(commands) > 1:
            lines.append(f"# node {rank}")
        lines.append(shlex.join(command))
    lines.append(f"# resolved config of {recipe.name}")
    lines.append(yaml.safe_dump(recipe.resolved_config(), sort_keys=True).rstrip())
    return "\n".join(lines)


def run_in_process_group(command: list[str]) -> int:
    """Run a launch command from the repository root (where relative recipe paths point), in its own process group.

    SIGTERM or SIGINT to the launcher goes to that whole group (`accelerate launch` and its training processes),
    and the launcher waits for them to exit: killing it leaves nothing training. A child killed by signal N gives
    128 + N, as a shell reports it. The handlers are installed before the job starts, so the job inherits default
    dispositions: a launcher started in the background by a shell ignores SIGINT, and its job would too.
    """
    started: list[subprocess.Popen[bytes]] = []
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        for process in started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=os.environ.copy(), start_new_session=True)
        started.append(process)
        for signum in received:  # arrived while the job was starting
            os.killpg(process.pid, signum)
        returncode = process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return returncode if returncode >= 0 else 128 - returncode


def pop_hub_token(overrides: list[str]) -> list[str]:
    """The overrides without `--hub_token`, whose value goes to the jobs' environment as `HF_TOKEN` instead."""
    kept: list[str] = []
    arguments = iter(overrides)
    for argument in arguments:
        if argument == HUB_TOKEN_FLAG:
            os.environ["HF_TOKEN"] = next(arguments, "")
        elif argument.startswith(f"{HUB_TOKEN_FLAG}="):
            os.environ["HF_TOKEN"] = argument.partition("=")[2]
        else:
            kept.append(argument)
    return kept


def recipe_command_parser(prog: str, what: str, example: str, dry_run_help: str) -> argparse.ArgumentParser:
    """The command line shared by `train` and `sweep`: a recipe, `--dry-run`, then `--` and recipe overrides."""
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False, description=f"{what} Arguments after `--` override recipe fields."
    )
    parser.add_argument("recipe", help=f"recipe name in recipes/ (e.g. {example}) or a YAML path")
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    return parser


def parse_command_line(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """The launcher's own flags, and the recipe overrides: after `--`, and any flag the launcher does not know."""
    launcher_argv, overrides = split_overrides(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(launcher_argv)
    return args, pop_hub_token([*unknown, *overrides])


def build_parser() -> argparse.ArgumentParser:
    parser = recipe_command_parser(
        "reversal-hf train",
        "Launch a recipe through accelerate.",
        "exp1_tiny",
        "print the command(s) and resolved config, run nothing",
    )
    parser.add_argument("--nnodes", type=int, default=1, help="number of nodes (multi-node ZeRO-3)")
    parser.add_argument("--machine-rank", type=int, help="this node's rank (multi-node runs; Slurm: $SLURM_NODEID)")
    parser.add_argument(
        "--main-process-ip",
        default=os.environ.get("MAIN_PROCESS_IP", "127.0.0.1"),
        help="address of the rank-0 node (default: $MAIN_PROCESS_IP)",
    )
    parser.add_argument("--main-process-port", type=int, default=DEFAULT_MAIN_PROCESS_PORT)
    return parser


def launch(args: argparse.Namespace, overrides: list[str]) -> None:
    """Check every run of the recipe, then print (`--dry-run`) or run their commands one after the other; a failed
    run ends the launch with its exit status (it has printed why)."""
    if args.nnodes < 1:
        raise RecipeError("--nnodes must be at least 1")
    if args.machine_rank is not None and not 0 <= args.machine_rank < args.nnodes:
        raise RecipeError(f"--machine-rank must be in 0..{args.nnodes - 1}")
    recipes = prepare_runs(args.recipe, overrides, nnodes=args.nnodes, dry_run=args.dry_run)
    node = {"nnodes": args.nnodes, "main_process_ip": args.main_process_ip, "main_process_port": args.main_process_port}
    commands = [build_commands(recipe, **node) for recipe in recipes]
    if args.dry_run:
        runs = zip(recipes, commands, strict=True)
        print("\n".join(format_dry_run(*run, name_run=len(recipes) > 1) for run in runs))
        return
    if args.nnodes > 1 and args.machine_rank is None:
        raise RecipeError("--machine-rank is required to run a multi-node launch (see recipes/launch.slurm)")
    for node_commands in commands:
        returncode = run_in_process_group(node_commands[args.machine_rank or 0])
        if returncode != 0:
            raise CommandFailed(exit_status=returncode)


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_command_line(build_parser(), argv)
    return run_command(lambda: launch(args, overrides), (RecipeError,), done=None)
