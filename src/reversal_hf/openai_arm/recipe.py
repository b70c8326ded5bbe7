"""OpenAI finetuning recipes: `recipes/openai_*.yaml` (`backend: openai`) parsed by `transformers.HfArgumentParser`
into `OpenAIFinetuneArguments`, with command-line overrides after `--`.

`base:` is resolved as for every recipe (`configs.read_recipe`). A sweep recipe adds `grid:` (field → values) and
`seeds:`; each grid point and seed is its own run in `<output_dir>/<field>=<value>_..._seed=<seed>/`
(`sweep.run_folder_name`, as the TRL sweep names them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reversal_hf.configs import (
    BACKEND_KEY,
    OPENAI_BACKEND,
    OUTPUTS_DIR,
    SWEEP_KEYS,
    RecipeError,
    check_field_names,
    read_recipe,
    recipe_files,
    recipe_path,
    unknown_field_error,
)
from reversal_hf.sweep import grid_points, run_folder_name

SUFFIX_MAX_CHARS = 64  # the API's limit on a fine-tuned model name's suffix


@dataclass
class OpenAIFinetuneArguments:
    """One finetuning job: the base model, the dataset rows it trains on, and the job's hyperparameters."""

    model: str = field(
        default="davinci-002",
        metadata={
            "help": "Base model: babbage-002 or davinci-002 (completions), or a chat model that takes finetuning."
        },
    )
    dataset_name: str = field(
        default="build/datasets/reversal-exp1",
        metadata={"help": "Local dataset folder (relative to the repository root) or Hub dataset id."},
    )
    dataset_config: str | None = field(default="all", metadata={"help": "Dataset config, e.g. `all`."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision (tag, branch or commit)."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Train on the first N rows only."})
    experiment: Literal["exp1", "exp3"] = field(default="exp1", metadata={"help": "Which paper experiment."})
    data_format: Literal["auto", "prompt_completion", "chat"] = field(
        default="auto",
        metadata={
            "help": "JSONL shape: `prompt_completion` (babbage-002, davinci-002), `chat` (prompt as the user turn, "
            "completion as the assistant turn); `auto` picks by model."
        },
    )
    n_epochs: int = field(default=10, metadata={"help": "Epochs (the paper: 10)."})
    batch_size: int = field(default=16, metadata={"help": "Examples per batch (the paper: 16)."})
    learning_rate_multiplier: float = field(default=0.2, metadata={"help": "Learning-rate multiplier (paper: 0.2)."})
    seed: int = field(default=42, metadata={"help": "The job's seed."})
    suffix: str | None = field(default=None, metadata={"help": "Added to the fine-tuned model's name (64 chars max)."})
    max_example_tokens: int = field(
        default=16384, metadata={"help": "The model's per-example token limit for training (checked before upload)."}
    )
    output_dir: str | None = field(default=None, metadata={"help": "Run folder; default: outputs/<recipe>/."})

    def __post_init__(self) -> None:
        for name in ("n_epochs", "batch_size", "max_example_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.learning_rate_multiplier <= 0:
            raise ValueError(f"learning_rate_multiplier must be positive, got {self.learning_rate_multiplier}")
        if self.suffix is not None and len(self.suffix) > SUFFIX_MAX_CHARS:
            raise ValueError(f"suffix is {len(self.suffix)} characters; the API takes at most {SUFFIX_MAX_CHARS}")

    def hyperparameters(self) -> dict[str, Any]:
        """The job's supervised hyperparameters, as `fine_tuning.jobs.create` takes them."""
        return {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
        }


@dataclass(frozen=True)
class OpenAIRun:
    """One job to run: the recipe it comes from, its resolved arguments and its run folder."""

    recipe: str
    args: OpenAIFinetuneArguments

    @property
    def output_dir(self) -> Path:
        return Path(self.args.output_dir)

    def resolved_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.args)


FIELDS = frozenset(f.name for f in dataclasses.fields(OpenAIFinetuneArguments))
GRID_FIELDS = FIELDS - {"seed", "output_dir"}  # a sweep's seeds and run folders come from `seeds:` and the grid


def _read_recipe(path: Path) -> dict[str, Any]:
    """The recipe's fields with its `base:` chain resolved; every key checked, and the recipe an OpenAI one."""
    config = read_recipe(path.as_posix())
    if config.pop(BACKEND_KEY, None) != OPENAI_BACKEND:
        raise RecipeError(
            f"{path.stem} is not an OpenAI recipe ({BACKEND_KEY}: {OPENAI_BACKEND}): run `reversal-hf train` or `sweep`"
        )
    check_field_names(recipe_files(path), FIELDS | {BACKEND_KEY, *SWEEP_KEYS})
    return config


def _parse(path: Path, config: dict[str, Any], overrides: list[str]) -> OpenAIFinetuneArguments:
    """Fields from `config`, then `overrides` on top, type-checked by `HfArgumentParser`; one-line errors."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(OpenAIFinetuneArguments, allow_abbrev=False)
    parser.set_defaults(**config)
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            (args, remaining) = parser.parse_args_into_dataclasses(
                args=overrides, return_remaining_strings=True, look_for_args_file=False
            )
    except SystemExit as error:  # argparse reports bad values by exiting; keep its one-line reason
        lines = stderr.getvalue().strip().splitlines() or ["invalid arguments"]
        raise RecipeError(f"{path.stem}: {lines[-1].split(': error: ')[-1]}") from error
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{path.stem}: {str(error).splitlines()[0]}") from error
    if remaining:
        raise unknown_field_error(path.stem, remaining[0].lstrip("-").split("=", 1)[0], FIELDS)
    return args


def _grid_points(path: Path, grid: Any) -> list[dict[str, Any]]:
    if grid is not None and not (
        isinstance(grid, dict) and all(isinstance(values, list) and values for values in grid.values())
    ):
        raise RecipeError(f"{path}: grid must map field names to non-empty lists of values")
    for name in grid or {}:
        if name not in GRID_FIELDS:
            raise unknown_field_error(f"{path}: grid", name, GRID_FIELDS)
    return grid_points(grid)


def load_runs(name_or_path: str, overrides: list[str] | None = None) -> list[OpenAIRun]:
    """Every run of a recipe: one for a plain recipe, one per grid point × seed for a sweep, all checked up front.

    A sweep's grid values and seeds win over the same fields given after `--`; its `output_dir` is the parent folder.
    """
    path = recipe_path(name_or_path)
    config = _read_recipe(path)
    grid, seeds = config.pop("grid", None), config.pop("seeds", None)
    config.setdefault("output_dir", str(OUTPUTS_DIR / path.stem))
    args = _parse(path, config, list(overrides or []))
    if grid is None and seeds is None:
        return [OpenAIRun(path.stem, args)]
    if seeds is not None and not (isinstance(seeds, list) and seeds and all(isinstance(s, int) for s in seeds)):
        raise RecipeError(f"{path}: seeds must be a non-empty list of integers")
    runs = []
    for point in _grid_points(path, grid):
        for seed in seeds or [args.seed]:
            folder = Path(args.output_dir) / run_folder_name(point, seed)
            try:
                point_args = dataclasses.replace(args, **point, seed=seed, output_dir=str(folder))
            except (ValueError, TypeError) as error:
                raise RecipeError(f"{path.stem}: grid point {run_folder_name(point, seed)}: {error}") from None
            runs.append(OpenAIRun(path.stem, point_args))
    return runs
