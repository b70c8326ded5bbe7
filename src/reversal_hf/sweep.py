"""`reversal-hf sweep <recipe>`: one run per grid point and seed, each in its own folder, skipping finished ones.

A sweep is a recipe with `grid:` (field → values) and/or `seeds:`. Run folders are
`<output_dir>/<field>=<value>_..._seed=<seed>/`, under `<output_dir>/<config>/` for each of a recipe's
`dataset_configs`; one holding `run_info.json` is finished (training writes it last), so rerunning a sweep after a
crash picks up where it stopped (the interrupted run resumes from its checkpoint). A sweep with `push_to_hub` pushes
every run to the sweep's repository, each on its own branch (`hub.sweep_revision`: `seed-0`,
`learning_rate-0.001-seed-1`, ...).
"""

from __future__ import annotations

import argparse
import itertools
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reversal_hf import launch
from reversal_hf.command import CommandFailed, run_command
from reversal_hf.configs import Recipe, RecipeError
from reversal_hf.hub import PushTarget
from reversal_hf.paths import REPO_ROOT
from reversal_hf.run_folder import is_finished


@dataclass(frozen=True)
class SweepRun:
    """One grid point and seed: its overrides and output folder."""

    point: dict[str, Any]
    seed: int
    output_dir: Path
    dataset_config: str | None = None  # one of the recipe's `dataset_configs`

    @property
    def finished(self) -> bool:
        return is_finished(REPO_ROOT / self.output_dir)

    def overrides(self, target: PushTarget | None = None) -> list[str]:
        """Its grid point, seed and folder, and (a sweep that pushes to `target`) its own branch."""
        values = [arg for name, value in self.point.items() for arg in (f"--{name}", str(value))]
        if self.dataset_config is not None:
            values = ["--dataset_config", self.dataset_config, *values]
        pushed = launch.run_push_overrides(target, self.point, self.seed, self.dataset_config)
        return [*values, "--seed", str(self.seed), "--output_dir", str(self.output_dir), *pushed]


def run_folder_name(point: dict[str, Any], seed: int) -> str:
    return "_".join([*(f"{name}={value}" for name, value in point.items()), f"seed={seed}"])


def grid_points(grid: dict[str, list[Any]] | None) -> list[dict[str, Any]]:
    """Every combination of a grid's values (field → values), in grid order; one empty point without a grid."""
    grid = grid or {}
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def expand(recipe: Recipe) -> list[SweepRun]:
    """Every dataset config × grid point × seed of a recipe, in grid order (a recipe without a grid sweeps its seeds
    only; one with `dataset_configs` nests each config's runs in `<output_dir>/<config>/`)."""
    seeds = recipe.launch_args.seeds or [recipe.training_args.seed]
    root = Path(recipe.training_args.output_dir)
    configs: list[str | None] = list(recipe.launch_args.dataset_configs or [None])
    return [
        SweepRun(point, seed, (root / config if config else root) / run_folder_name(point, seed), config)
        for config in configs
        for point in grid_points(recipe.launch_args.grid)
        for seed in seeds
    ]


def plan(recipe: Recipe, overrides: list[str]) -> list[tuple[SweepRun, Recipe]]:
    """Each run with its own resolved recipe: every grid point is parsed and checked before the first run starts."""
    target = launch.checked_push_target(recipe)
    return [
        (
            run,
            launch.prepare(
                recipe.path.as_posix(), [*overrides, *run.overrides(target)], nnodes=1, dry_run=True, sweep=True
            ),
        )
        for run in expand(recipe)
    ]


def build_parser() -> argparse.ArgumentParser:
    return launch.recipe_command_parser(
        "reversal-hf sweep",
        "Run every grid point and seed of a recipe.",
        "exp1_llama7b_sweep",
        "list the runs and their commands, run nothing",
    )


def run_sweep(args: argparse.Namespace, overrides: list[str]) -> None:
    """Check every run, then list (`--dry-run`) or run them one after the other; a failed run stops the sweep."""
    recipe = launch.prepare(args.recipe, overrides, nnodes=1, dry_run=True, sweep=True)
    runs = plan(recipe, overrides)
    if not args.dry_run:  # the model is prepared once here, not by every run
        launch.check_model(recipe, dry_run=False)
    print(f"{recipe.name}: {len(runs)} runs, {sum(run.finished for run, _ in runs)} finished")
    for index, (run, single) in enumerate(runs, 1):
        command = launch.build_commands(single)[0]
        print(f"[{index}/{len(runs)}] {run.output_dir} ({'finished, skipped' if run.finished else 'to run'})")
        if args.dry_run or run.finished:
            print(f"  {shlex.join(command)}")
            continue
        returncode = launch.run_in_process_group(command)
        if returncode != 0:
            raise CommandFailed(f"run {run.output_dir} failed with exit code {returncode}", returncode)


def main(argv: list[str] | None = None) -> int:
    args, overrides = launch.parse_command_line(build_parser(), argv)
    return run_command(lambda: run_sweep(args, overrides), (RecipeError,), done=None)
