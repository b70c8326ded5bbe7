"""Recipes: YAML files parsed by `trl.TrlParser` into `ScriptArguments`, `SFTConfig` and `ModelConfig`.

A recipe is `recipes/<name>.yaml`; every field can be overridden on the command line (`--learning_rate 1e-5`).
Unknown fields, in the YAML or on the command line, are one-line errors naming the field, raised before any model
or dataset is touched.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from reversal_hf.paths import REPO_ROOT

RECIPES_DIR = REPO_ROOT / "recipes"
ACCELERATE_CONFIGS_DIR = REPO_ROOT / "accelerate_configs"
OUTPUTS_DIR = Path("outputs")
# Keys TrlParser handles itself rather than through a dataclass field.
PARSER_KEYS = {"env"}
SPECIAL_TOKEN_FIELDS = ("eos_token", "pad_token")


class RecipeError(ValueError):
    """A recipe or its overrides cannot be resolved (unknown recipe, unknown field, bad value)."""


@dataclass
class ScriptArguments:
    """What to train on and how to launch it; the rest of a recipe is `SFTConfig` and `ModelConfig`."""

    dataset_name: str = field(
        default="build/datasets/reversal-exp1",
        metadata={"help": "Local dataset folder (relative to the repository root) or Hub dataset id."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Dataset config, e.g. `all` or `p2d`."})
    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision (tag, branch or commit)."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows only (smoke tests and CI)."}
    )
    experiment: Literal["exp1", "exp3"] = field(default="exp1", metadata={"help": "Which paper experiment."})
    training_mode: Literal["full", "prompt_tuning", "lora"] = field(
        default="full", metadata={"help": "Full finetuning, PEFT prompt tuning, or LoRA (ModelConfig lora_* fields)."}
    )
    mask_prompt: bool = field(
        default=False,
        metadata={"help": "Compute the loss on completions only. The paper trained on whole documents, so off."},
    )
    isolated_padding_free: bool = field(
        default=False,
        metadata={
            "help": "Batch documents into one row without padding, each in its own attention context "
            "(reversal_hf.collators.PaddingFreeCollator; checked before training). Not with prompt tuning."
        },
    )
    total_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Global batch size; gradient accumulation is derived from it, the per-device batch size and the "
            "number of processes (it must divide exactly)."
        },
    )
    prompt_tuning_fact: str | None = field(
        default=None,
        metadata={
            "help": "Prompt tuning (Appendix B.8): train on the rows whose `name` is this fact's name and initialise "
            "the soft prompt from the fact's text."
        },
    )
    num_virtual_tokens: int | None = field(
        default=None, metadata={"help": "Soft prompt length; default: the token count of the fact's text."}
    )
    accelerate_config: str = field(
        default="cpu", metadata={"help": "Name of a file in accelerate_configs/ (without .yaml) or a path."}
    )
    num_processes: int | None = field(
        default=None, metadata={"help": "Processes per node; default: the accelerate config's num_processes."}
    )
    grid: dict[str, Any] | str | None = field(
        default=None, metadata={"help": "Sweep grid: field -> list of values (JSON on the command line)."}
    )
    seeds: list[int] | None = field(default=None, metadata={"help": "Sweep seeds; one run per grid point and seed."})

    def __post_init__(self) -> None:
        if isinstance(self.grid, str):
            self.grid = json.loads(self.grid)
        if self.grid is not None and not (
            isinstance(self.grid, dict) and all(isinstance(v, list) and v for v in self.grid.values())
        ):
            raise ValueError("grid must map field names to non-empty lists of values")
        if self.isolated_padding_free and self.training_mode == "prompt_tuning":
            # PEFT prepends the soft prompt and drops position_ids, which is what keeps packed documents apart.
            raise ValueError("isolated_padding_free does not work with prompt tuning: set it to false")
        if self.prompt_tuning_fact is not None and self.training_mode != "prompt_tuning":
            raise ValueError("prompt_tuning_fact needs training_mode: prompt_tuning")


@dataclass
class Recipe:
    """A resolved recipe: its name and file, the parsed arguments, and the overrides that produced them."""

    name: str
    path: Path
    script_args: ScriptArguments
    training_args: Any  # trl.SFTConfig (imported lazily: trl is slow to import)
    model_args: Any  # trl.ModelConfig
    overrides: list[str]

    def resolved_config(self) -> dict[str, Any]:
        """Every argument, JSON-serialisable, with the Hub token (the only secret) redacted."""
        config = {**dataclasses.asdict(self.script_args), **dataclasses.asdict(self.model_args)}
        config.update(self.training_args.to_dict())
        # to_dict hides every `*_token` field; eos_token and pad_token are vocabulary, not secrets.
        config.update({key: getattr(self.training_args, key) for key in SPECIAL_TOKEN_FIELDS})
        return json.loads(json.dumps(config, default=str))


def list_recipes() -> list[str]:
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str) -> Path:
    """`exp1_tiny` → `recipes/exp1_tiny.yaml`; an existing YAML path is taken as is."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} and candidate.is_file():
        return candidate
    path = RECIPES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise RecipeError(f"unknown recipe {name_or_path!r}; available: {', '.join(list_recipes())}")
    return path


def accelerate_config_path(name_or_path: str) -> Path:
    """`zero3` → `accelerate_configs/zero3.yaml`; an existing YAML path is taken as is."""
    candidate = Path(name_or_path)
    path = candidate if candidate.suffix == ".yaml" else ACCELERATE_CONFIGS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        available = ", ".join(sorted(p.stem for p in ACCELERATE_CONFIGS_DIR.glob("*.yaml")))
        raise RecipeError(f"accelerate_config: {name_or_path!r} not found; available: {available}")
    return path


def _parser():
    from trl import ModelConfig, SFTConfig, TrlParser

    return TrlParser((ScriptArguments, SFTConfig, ModelConfig))


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: invalid YAML ({str(error).splitlines()[0]})") from error
    if not isinstance(config, dict):
        raise RecipeError(f"{path}: a recipe must be a YAML mapping of field: value")
    return config


def _check_field_names(parser, path: Path, config: dict[str, Any]) -> None:
    known = {action.dest for action in parser._actions} | PARSER_KEYS
    for key in config:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise RecipeError(f"{path}: unknown field {key!r}{suggestion}")


def _overrides_name(overrides: list[str], field_name: str) -> bool:
    flags = {f"--{field_name}", f"--{field_name.replace('_', '-')}"}
    return any(arg.split("=", 1)[0] in flags for arg in overrides)


@contextlib.contextmanager
def _target_hardware_checks_off():
    """Let a launcher host without a bf16 GPU (a laptop, a login node) validate GPU recipes.

    `TrainingArguments` refuses `bf16` when *this* machine lacks a bf16 GPU; the recipe is meant for the machines it
    launches on, which check it again when the training script parses it there.
    """
    from unittest import mock

    with mock.patch("transformers.training_args.is_torch_bf16_gpu_available", return_value=True):
        yield


def load_recipe(name_or_path: str, overrides: list[str] | None = None, *, on_launcher: bool = False) -> Recipe:
    """Parse a recipe plus command-line overrides; `outputs/<recipe>/` unless an `output_dir` is given."""
    overrides = list(overrides or [])
    path = recipe_path(name_or_path)
    config = _read_yaml(path)
    parser = _parser()
    _check_field_names(parser, path, config)
    stderr = io.StringIO()
    checks = _target_hardware_checks_off() if on_launcher else contextlib.nullcontext()
    try:
        with checks, contextlib.redirect_stderr(stderr):
            script_args, training_args, model_args, remaining = parser.parse_args_and_config(
                args=["--config", str(path), *overrides], return_remaining_strings=True
            )
    except SystemExit as error:  # argparse reports bad values by exiting; keep its one-line reason
        reason = stderr.getvalue().strip().splitlines()[-1] if stderr.getvalue().strip() else "invalid arguments"
        raise RecipeError(f"{path.stem}: {reason.removeprefix('error: ').split(': error: ')[-1]}") from error
    except (ValueError, TypeError) as error:
        raise RecipeError(f"{path.stem}: {str(error).splitlines()[0]}") from error
    if remaining:
        raise RecipeError(f"{path.stem}: unknown argument {remaining[0]!r}")
    if "output_dir" not in config and not _overrides_name(overrides, "output_dir"):
        training_args.output_dir = str(OUTPUTS_DIR / path.stem)
    return Recipe(path.stem, path, script_args, training_args, model_args, overrides)


def gradient_accumulation_steps(total_batch_size: int, per_device_batch_size: int, world_size: int) -> int:
    """The accumulation that makes `total_batch_size` from per-device batches on `world_size` processes."""
    per_step = per_device_batch_size * world_size
    if total_batch_size % per_step:
        raise RecipeError(
            f"total_batch_size {total_batch_size} is not a multiple of per_device_train_batch_size "
            f"{per_device_batch_size} x {world_size} processes"
        )
    return total_batch_size // per_step
