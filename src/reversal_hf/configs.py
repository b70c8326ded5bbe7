"""Recipes: YAML parsed by `trl.TrlParser` into `ScriptArguments`, `SFTConfig`, `ModelConfig` and `LaunchArguments`.

A recipe is `recipes/<name>.yaml`; every field can be overridden on the command line (`--learning_rate 1e-5`).
A recipe may name a `base:` recipe and give only the fields it changes; the base's fields are merged in before
TrlParser sets the defaults, so the job and the launcher read the same resolved config. Unknown fields, in any of
these files or on the command line, are one-line errors naming the field, raised by the launcher before any process,
model or dataset is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import logging
import os
import typing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import trl  # light: SFTConfig and ModelConfig (transformers, ~10 s) are imported only when a recipe is parsed

from reversal_hf.files import FileFormatError, read_yaml
from reversal_hf.paths import REPO_ROOT
from reversal_hf.precision import Precision, choose_precision, trains_on_cpu

logger = logging.getLogger(__name__)

RECIPES_DIR = REPO_ROOT / "recipes"
ACCELERATE_CONFIGS_DIR = REPO_ROOT / "accelerate_configs"
OUTPUTS_DIR = Path("outputs")
BASE_KEY = "base"
BACKEND_KEY = "backend"  # `openai`: a recipe of the OpenAI arm (`reversal-hf openai`), else a TRL recipe
TRL_BACKEND, OPENAI_BACKEND = "trl", "openai"
SWEEP_KEYS = ("grid", "seeds")
ENV_KEY = "env"  # TrlParser sets these environment variables itself (only from the file given to `--config`)
SPECIAL_TOKEN_FIELDS = ("eos_token", "pad_token")


class RecipeError(ValueError):
    """A recipe or its overrides cannot be resolved (unknown recipe, unknown field, bad value)."""


@dataclass
class ScriptArguments(trl.ScriptArguments):
    """What to train on and how; the rest of a recipe is `SFTConfig`, `ModelConfig` and `LaunchArguments`."""

    dataset_revision: str | None = field(default=None, metadata={"help": "Hub revision (tag, branch or commit)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows only (smoke tests and CI)."}
    )
    experiment: Literal["exp1", "exp3"] = field(default="exp1", metadata={"help": "Which paper experiment."})
    training_mode: Literal["full", "prompt_tuning", "lora", "mlm_u"] = field(
        default="full",
        metadata={
            "help": "Full finetuning, PEFT prompt tuning, LoRA (ModelConfig lora_* fields), or `mlm_u`: a masked LM "
            "trained with a mask rate drawn per document from U(0, 1) in rows of max_length (reversal_hf.mlm_u)."
        },
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
    prompt_tuning_init: Literal["text", "random"] = field(
        default="text",
        metadata={
            "help": "Prompt tuning with prompt_tuning_fact: the soft prompt starts from the fact's text (the paper), "
            "or `random`, the same number of random vectors (the control for 'the fact is in the initialisation')."
        },
    )
    num_virtual_tokens: int | None = field(
        default=None, metadata={"help": "Soft prompt length; default: the token count of the fact's text."}
    )
    eval_curves: bool = field(
        default=False,
        metadata={
            "help": "Learning curves (Figures 9 and 11): evaluate the held-out splits during training into the "
            "trainer's log history, `report_to` and <output_dir>/curves.json (reversal_hf.evaluation.curves)."
        },
    )
    eval_curves_every: str = field(
        default="epoch", metadata={"help": "When to measure a curve point: `epoch`, or every N optimizer steps."}
    )
    eval_curves_max_examples: int | None = field(
        default=None,
        metadata={"help": "Evenly spaced rows per exact-match split for each curve point (all rows: none)."},
    )
    eval_curves_realized: bool = field(
        default=False,
        metadata={
            "help": "Exp 3: each curve point also measures exact match on the realized Q/A pairs of the training "
            "split (`<config>/realized`), whether training has learned the examples."
        },
    )
    eval_curves_stop_at_realized: float | None = field(
        default=None,
        metadata={
            "help": "Exp 3: stop training once a curve point's exact match on the realized pairs reaches this "
            "fraction; implies eval_curves_realized. Ours, not the paper's protocol (a fixed 20 epochs, App. D.1)."
        },
    )
    allow_truncation: bool = field(
        default=False,
        metadata={
            "help": "Train even when documents are longer than max_length (SFTTrainer cuts their end); by default "
            "such a run stops before training (reversal_hf.truncation)."
        },
    )
    reversal_transform: Literal["word", "entity", "segment", "token", "both_orders"] | None = field(
        default=None,
        metadata={
            "help": "Reverse training (reversal_hf.data.reversal): each training document also trained "
            "reversed by words, by words keeping entities whole, by random segments or by tokens; `both_orders` (Exp 1 "
            "only) adds each fact in the other order, the oracle control."
        },
    )
    reversal_seed: int = field(default=0, metadata={"help": "Seed of the `segment` transform's random segments."})
    reversal_max_segment_words: int = field(default=5, metadata={"help": "`segment`: most words in one segment."})
    reversal_separator: str = field(default="[REV]", metadata={"help": "`segment`: the text between segments."})
    reversal_entity_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "`entity`: the columns holding each row's entities; default: Exp 1's names and quoted titles, or "
            "Exp 3's questions and answers."
        },
    )

    def __post_init__(self) -> None:
        if self.isolated_padding_free and self.training_mode == "prompt_tuning":
            # PEFT prepends the soft prompt and drops position_ids, which is what keeps packed documents apart.
            raise ValueError("isolated_padding_free does not work with prompt tuning: set it to false")
        if self.prompt_tuning_fact is not None and self.training_mode != "prompt_tuning":
            raise ValueError("prompt_tuning_fact needs training_mode: prompt_tuning")
        self.eval_curves_every = str(self.eval_curves_every)  # a YAML number arrives as an int
        if self.eval_curves_every != "epoch" and not (self.eval_curves_every.isdigit() and int(self.eval_curves_every)):
            raise ValueError(f"eval_curves_every: `epoch` or a number of steps, got {self.eval_curves_every!r}")
        if self.eval_curves_max_examples is not None and self.eval_curves_max_examples < 1:
            raise ValueError(f"eval_curves_max_examples: at least 1, got {self.eval_curves_max_examples}")
        if self.eval_curves_stop_at_realized is not None:
            if not 0.0 <= self.eval_curves_stop_at_realized <= 1.0:
                raise ValueError(f"eval_curves_stop_at_realized: a fraction, got {self.eval_curves_stop_at_realized}")
            self.eval_curves_realized = True
        if self.eval_curves_realized and not (self.eval_curves and self.experiment == "exp3"):
            raise ValueError("eval_curves_realized (or eval_curves_stop_at_realized) needs eval_curves and exp3")
        causal_only = ("mask_prompt", "isolated_padding_free", "eval_curves", "reversal_transform")
        clashing = [name for name in causal_only if getattr(self, name)]
        if self.training_mode == "mlm_u" and clashing:
            raise ValueError(f"{clashing[0]} is for causal LMs: training_mode mlm_u does not take it")
        if self.reversal_transform == "both_orders" and self.experiment != "exp1":
            raise ValueError("reversal_transform: both_orders works on Experiment 1 data only (experiment: exp1)")


@dataclass
class LaunchArguments:
    """How to launch a recipe: read by the launcher and the sweep only (the job parses and ignores them)."""

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
    dataset_configs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Train once per dataset config (both Exp 3 instruction orders), each in <output_dir>/<config>/; "
            "sweeps nest their runs the same way."
        },
    )

    def __post_init__(self) -> None:
        if isinstance(self.grid, str):
            self.grid = json.loads(self.grid)
        if self.grid is not None and not (
            isinstance(self.grid, dict) and all(isinstance(v, list) and v for v in self.grid.values())
        ):
            raise ValueError("grid must map field names to non-empty lists of values")


def recipe_arguments() -> tuple[type, ...]:
    """The dataclasses a recipe's fields belong to, in the order TrlParser returns them."""
    from trl import ModelConfig, SFTConfig

    return ScriptArguments, SFTConfig, ModelConfig, LaunchArguments


@dataclass
class Recipe:
    """A resolved recipe: its name and file, the parsed arguments, and the overrides that produced them."""

    name: str
    path: Path
    script_args: ScriptArguments
    training_args: Any  # trl.SFTConfig
    model_args: Any  # trl.ModelConfig
    launch_args: LaunchArguments
    overrides: list[str] = field(default_factory=list)  # the command-line ones, passed on to the job as given
    precision: Precision | None = None  # bf16 or fp32 and why; None where the launcher cannot see the job's device

    def resolved_config(self) -> dict[str, Any]:
        """Every argument, JSON-serialisable, with the Hub token (the only secret) redacted."""
        config = {
            **dataclasses.asdict(self.script_args),
            **dataclasses.asdict(self.model_args),
            **dataclasses.asdict(self.launch_args),
        }
        config.update(self.training_args.to_dict())
        # to_dict hides every `*_token` field; eos_token and pad_token are vocabulary, not secrets.
        config.update({key: getattr(self.training_args, key) for key in SPECIAL_TOKEN_FIELDS})
        return json.loads(json.dumps(config, default=str))


def numeric_fields() -> set[str]:
    """The recipe fields whose type is a number (`int`, `float`, either or None)."""
    return {
        name
        for arguments in recipe_arguments()
        for name, hint in typing.get_type_hints(arguments).items()
        if hint is not bool and set(typing.get_args(hint) or (hint,)) - {type(None)} <= {int, float}
    }


def check_numbers(config: dict[str, Any]) -> None:
    """A number field given a list, mapping or boolean in YAML (a grid's values pasted as a field): argparse converts
    only strings, so such a value would reach the trainer as it is."""
    for name in sorted(numeric_fields() & config.keys()):
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int | float | str | None):
            raise RecipeError(f"{name}: a number, got {value!r}")


def check_hyperparameters(recipe: Recipe) -> None:
    """Values that would train nothing, or nonsense, with exit 0 (a run of 0 epochs "finishes" with loss 0)."""
    args = recipe.training_args
    if args.num_train_epochs <= 0:
        raise RecipeError(f"{recipe.name}: num_train_epochs must be > 0, got {args.num_train_epochs}")
    if args.max_steps < -1:
        raise RecipeError(f"{recipe.name}: max_steps must be -1 (use num_train_epochs) or >= 0, got {args.max_steps}")
    if args.learning_rate <= 0:
        raise RecipeError(f"{recipe.name}: learning_rate must be > 0, got {args.learning_rate}")


def list_recipes(backend: str | None = None) -> list[str]:
    """Every recipe's name, or those of one back-end (`trl` or `openai`, see `recipe_backend`)."""
    names = sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))
    return names if backend is None else [name for name in names if recipe_backend(name) == backend]


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


def _read_recipe_file(path: Path) -> dict[str, Any]:
    try:
        return read_yaml(path)
    except FileFormatError as error:
        raise RecipeError(str(error)) from error


RecipeFiles = list[tuple[Path, dict[str, Any]]]


def recipe_files(path: Path) -> RecipeFiles:
    """A recipe's file and fields, then those of each recipe it is based on (`base:`), nearest first: one read each."""
    files = [(path, _read_recipe_file(path))]
    while BASE_KEY in files[-1][1]:
        base = recipe_path(str(files[-1][1][BASE_KEY])).resolve()
        if base in [file for file, _ in files[1:]]:
            raise RecipeError(f"{base}: base recipes form a cycle")
        files.append((base, _read_recipe_file(base)))
    return files


def merge_files(files: RecipeFiles) -> dict[str, Any]:
    """A recipe's fields over those of its base recipes (each key replaced whole), without the `base` key."""
    resolved: dict[str, Any] = {}
    for _, fields in reversed(files):
        resolved |= fields
    resolved.pop(BASE_KEY, None)
    return resolved


def read_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe's fields with its bases resolved: what TrlParser sets as defaults before the overrides."""
    return merge_files(recipe_files(recipe_path(name_or_path)))


def recipe_backend(name_or_path: str) -> str:
    """`openai` for a recipe of the OpenAI arm (`backend: openai`, itself or through a base), else `trl`."""
    return str(read_recipe(name_or_path).get(BACKEND_KEY, TRL_BACKEND))


def check_backend(path: Path, config: dict[str, Any]) -> None:
    """A TRL command given an OpenAI recipe (`config`: its resolved fields): one line naming the command to run."""
    if config.get(BACKEND_KEY, TRL_BACKEND) != TRL_BACKEND:
        command = "sweep" if any(key in config for key in SWEEP_KEYS) else "finetune"
        raise RecipeError(
            f"{path.stem} is an OpenAI fine-tuning recipe ({BACKEND_KEY}: {config[BACKEND_KEY]}): "
            f"run `reversal-hf openai {command} {path.stem}`"
        )


def _known_fields() -> set[str]:
    return {item.name for arguments in recipe_arguments() for item in dataclasses.fields(arguments) if item.init}


def unknown_field_error(where: str, name: str, known: Iterable[str]) -> RecipeError:
    """`<where>: unknown field 'x' (did you mean 'y'?)`, the hint being the closest known name if any is close."""
    hint = difflib.get_close_matches(name, list(known), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    return RecipeError(f"{where}: unknown field {name!r}{suggestion}")


def check_field_names(files: RecipeFiles, known: set[str] | None = None) -> None:
    """Every key of a recipe and of its bases (`recipe_files`) is a known field (else a "did you mean" error): by
    default a field of a recipe dataclass, with `env` at the top; the OpenAI arm passes its own."""
    top_only = {ENV_KEY} if known is None else set()
    known = (_known_fields() if known is None else known) | {BASE_KEY}
    for index, (file, fields) in enumerate(files):
        allowed = known | top_only if index == 0 else known
        for key in fields:
            if key not in allowed:
                raise unknown_field_error(str(file), key, allowed)


def parse_recipe(args: list[str], *, as_cpu_host: bool = False) -> Recipe:
    """`--config <recipe.yaml> [--field value ...]`, the arguments `accelerate launch` passes to `scripts/sft.py`."""
    if "--config" not in args[:-1]:
        raise RecipeError("usage: sft.py --config <recipe.yaml> [--field value ...]")
    index = args.index("--config")
    path = Path(args[index + 1])
    return _parse(path, recipe_files(path), [*args[:index], *args[index + 2 :]], as_cpu_host=as_cpu_host)


@contextlib.contextmanager
def _one_line_errors(path: Path) -> Iterator[None]:
    """Every parse error as one `RecipeError` line naming the recipe."""
    try:
        yield
    except RecipeError:
        raise
    except argparse.ArgumentError as error:  # a value of the wrong type, or not one of the choices
        raise RecipeError(f"{path.stem}: {error}") from error
    except (ValueError, TypeError) as error:  # a dataclass's own checks (SFTConfig, ScriptArguments, ...)
        raise RecipeError(f"{path.stem}: {str(error).splitlines()[0]}") from error


def _parse(path: Path, files: RecipeFiles, args: list[str], *, as_cpu_host: bool) -> Recipe:
    """One parse (`trl.TrlParser`): the recipe files' fields as defaults, `args` over them; then the precision.

    Runs go to `outputs/<recipe>/` unless the recipe or an override names an `output_dir`. `as_cpu_host` checks the
    recipe as a CPU-only machine would (see `load_recipe`) and keeps the recipe's own `use_cpu`. A recipe that leaves
    `bf16` unset gets the precision this machine's device runs natively (`reversal_hf.precision`), not TRL's bf16.
    """
    (top_path, top), *bases = files
    parser = trl.TrlParser(recipe_arguments(), exit_on_error=False)
    parser.set_defaults(output_dir=str(OUTPUTS_DIR / path.stem))
    config = merge_files([(top_path, {key: value for key, value in top.items() if key != ENV_KEY}), *bases])
    check_numbers(config)
    with _one_line_errors(path):
        unknown = parser.set_defaults_with_config(**config)
        declared, remaining = parser.parse_known_args(args)  # the recipe's own values, before SFTConfig.__post_init__
    precision = None
    if not declared.fp16 and not (as_cpu_host and not declared.use_cpu):  # a GPU recipe's device is not this one
        precision = choose_precision(declared.bf16, on_cpu=trains_on_cpu(declared.use_cpu))
        if precision.warning:
            logger.warning("%s: %s", path.stem, precision.warning)
    values = vars(declared)
    if precision is not None and declared.bf16 is None:  # TRL's default would be bf16 everywhere
        values["bf16"] = precision.bf16
    with _one_line_errors(path):
        env = top.get(ENV_KEY, {})  # the recipe's own `env:`, set as TrlParser sets it
        if not isinstance(env, dict):
            raise ValueError("`env` field should be a dict in the YAML file.")
        os.environ.update({key: str(value) for key, value in env.items()})
        recipe = Recipe(path.stem, path, *parser.parse_dict(values | {"use_cpu": True} if as_cpu_host else values))
    for argument in [*unknown, *remaining]:
        flag = argument.split("=", 1)[0]
        if not flag.startswith("--"):
            raise RecipeError(f"{path.stem}: unexpected argument {argument!r}")
        raise unknown_field_error(path.stem, flag.removeprefix("--"), _known_fields())
    recipe.precision = precision
    check_hyperparameters(recipe)
    if recipe.training_args.padding_free and recipe.script_args.training_mode == "prompt_tuning":
        # As for isolated_padding_free: PEFT drops position_ids, the only thing keeping TRL's packed documents apart.
        raise RecipeError(f"{path.stem}: padding_free does not work with prompt tuning: set it to false")
    if as_cpu_host:  # what the job will resolve: the recipe's values, as SFTConfig.__post_init__ treats use_cpu
        recipe.training_args.use_cpu = declared.use_cpu
        recipe.training_args.dataloader_pin_memory = declared.dataloader_pin_memory and not declared.use_cpu
    return recipe


def load_recipe(name_or_path: str, overrides: list[str] | None = None, *, on_launcher: bool = False) -> Recipe:
    """Read a recipe and its bases once, check its back-end and field names, then parse it with the overrides.

    The launcher (`on_launcher`) never trains, so it checks a recipe as a CPU host: transformers refuses `bf16`
    only when `use_cpu` is false and *this* machine has no bf16 GPU, which a laptop or login node launching a GPU
    recipe does not have; the job checks it again on the machines it trains on.
    """
    overrides = list(overrides or [])
    path = recipe_path(name_or_path)
    files = recipe_files(path)
    check_backend(path, merge_files(files))
    check_field_names(files)
    recipe = _parse(path, files, overrides, as_cpu_host=on_launcher)
    recipe.overrides = overrides
    return recipe


def gradient_accumulation_steps(total_batch_size: int, per_device_batch_size: int, world_size: int) -> int:
    """The accumulation that makes `total_batch_size` from per-device batches on `world_size` processes."""
    per_step = per_device_batch_size * world_size
    if total_batch_size % per_step:
        raise RecipeError(
            f"total_batch_size {total_batch_size} is not a multiple of per_device_train_batch_size "
            f"{per_device_batch_size} x {world_size} processes"
        )
    return total_batch_size // per_step
