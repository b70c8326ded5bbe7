"""Run folders as the report reads them (docs/ARCHITECTURE.md, "Run folders" and "Metrics JSON").

Runs of one configuration that differ only by seed form a `RunGroup`, the unit every table averages over. Groups of
one family (same experiment, recipe, model and training mode) that differ in hyperparameters are sweep points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reversal_hf import files, run_folder

EXPERIMENTS = ("exp1", "exp2", "exp3")
# resolved_config entries that tell apart the seeds of one configuration, not two configurations.
PER_RUN_KEYS = frozenset(
    {"seed", "data_seed", "output_dir", "run_name", "logging_dir", "hub_model_id", "resume_from_checkpoint"}
)
# Hyperparameters people sweep, tried first as a family's axes; others follow alphabetically. A key that the axes
# already determine (gradient_accumulation_steps when sweeping per-device batch size at a fixed total) is no axis.
PREFERRED_AXES = (
    "learning_rate",
    "total_batch_size",
    "per_device_train_batch_size",
    "num_train_epochs",
    "learning_rate_multiplier",  # the OpenAI arm's (openai_arm.recipe)
    "batch_size",
    "n_epochs",
)
# resolved_config entries added after runs had been committed, with the value the code before them behaved as: a run
# trained before a key existed reads as trained with that value, so it groups with the later seeds of its configuration.
KEYS_ADDED_LATER = {
    "prompt_tuning_init": "text",  # 5179b73 added the random-init control; a fact's soft prompt was text-initialised
}
_REQUIRED_RUN_INFO = ("recipe", "seed")
_REQUIRED_METRICS = {
    "exp1": ("exact_match",),
    "exp2": ("model", "parent_accuracy", "child_accuracy"),
    "exp3": ("exact_match",),
}


# The training mode of an evaluation-only folder: the model as downloaded or built, before any finetuning.
NOT_FINETUNED = "not finetuned"


class ReportInputError(ValueError):
    """A run folder or metrics file the report cannot use: the message names it, on one line."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return files.read_json(path)
    except files.FileFormatError as error:
        raise ReportInputError(str(error)) from error
    except (OSError, UnicodeDecodeError) as error:
        raise ReportInputError(f"{path}: unreadable ({error})") from error


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_metrics(path: Path, experiment: str, metrics: dict[str, Any]) -> None:
    for name in _REQUIRED_METRICS[experiment]:
        if name not in metrics:
            raise ReportInputError(f"{path}: missing field {name!r}")
    for name in ("parent_accuracy", "child_accuracy"):
        if name in metrics and not _is_number(metrics[name]):
            raise ReportInputError(f"{path}: field {name!r} is not a number")
    exact_match = metrics.get("exact_match", {})
    if not isinstance(exact_match, dict):
        raise ReportInputError(f"{path}: field 'exact_match' is not an object")
    for split, entry in exact_match.items():
        if not isinstance(entry, dict) or not _is_number(entry.get("accuracy")):
            raise ReportInputError(f"{path}: exact_match[{split!r}] has no numeric 'accuracy'")


@dataclass(frozen=True)
class Run:
    """One run folder: its `run_info.json` (empty for an evaluation-only folder), metrics per experiment, and
    its learning curves when it has them."""

    run_dir: Path
    info: dict[str, Any]
    metrics: dict[str, dict[str, Any]]
    curves: dict[str, Any] | None = None  # curves.json, for a run trained with `eval_curves`

    @property
    def name(self) -> str:
        return str(self.run_dir)

    @property
    def recipe(self) -> str:
        return str(self.info.get("recipe", ""))

    @property
    def model(self) -> str:
        """A Hub id as is; a local model folder by its name (`build/models/tiny-exp1` → `tiny-exp1`)."""
        model = str(
            self.info.get("model_name_or_path") or next((m["model"] for m in self.metrics.values() if "model" in m), "")
        )
        return Path(model).name if model.count("/") > 1 or Path(model).is_absolute() else model

    @property
    def training_mode(self) -> str:
        """`full`, `prompt_tuning`, ... from run_info.json; a folder without one scored a model as it was given."""
        return str(self.info.get("training_mode", "full")) if self.info else NOT_FINETUNED

    @property
    def hyperparameters(self) -> dict[str, Any]:
        config = self.info.get("resolved_config") or {}
        config = KEYS_ADDED_LATER | config if config else {}
        b8 = self.metrics.get("exp1", {}).get("prompt_tuning")
        if b8:  # B.8 scored against two different shuffled sets is two comparisons, not seeds of one
            legacy = (
                run_folder.SHUFFLED_SAME_TEMPLATE
                if run_folder.RUN_ID in self.metrics["exp1"]
                else run_folder.SHUFFLED_ANY_TEMPLATE
            )
            config = config | {"shuffled_reverse_prompts": b8.get("shuffled_reverse_prompts", legacy)}
        return {key: value for key, value in config.items() if key not in PER_RUN_KEYS}


def load_run(run_dir: Path) -> Run:
    """Read one run folder, or raise `ReportInputError` naming what is missing, or metrics of weights the folder no
    longer holds (their run id is not its run_info.json's; files without one, as committed results, are taken)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ReportInputError(f"{run_dir}: not a folder")
    metrics = {}
    for experiment in EXPERIMENTS:
        path = run_folder.metrics_path(run_dir, experiment)
        if path.is_file():
            metrics[experiment] = _read_json(path)
            _check_metrics(path, experiment, metrics[experiment])
    if not metrics:
        raise ReportInputError(f"{run_dir}: no eval/<experiment>_metrics.json (run `reversal-hf eval` first)")
    info_path = run_folder.run_info_path(run_dir)
    if not info_path.is_file():
        # An evaluation of a model we did not finetune (Exp 2; Exp 1 in context, App. B.6) is an `eval/` alone; a
        # folder with more in it is a training run that never finished.
        if any(path.name != run_folder.EVAL_DIRNAME for path in run_dir.iterdir()):
            raise ReportInputError(f"{run_dir}: no {run_folder.RUN_INFO} (an unfinished training run)")
        return Run(run_dir, {}, metrics)
    info = _read_json(info_path)
    for name in _REQUIRED_RUN_INFO:
        if name not in info:
            raise ReportInputError(f"{info_path}: missing field {name!r}")
    if not isinstance(info.get("resolved_config", {}), dict):
        raise ReportInputError(f"{info_path}: 'resolved_config' is not an object")
    for experiment, payload in metrics.items():
        if run_folder.scored_other_weights(info, payload):
            raise ReportInputError(
                f"{run_folder.metrics_path(run_dir, experiment)}: scores run {payload[run_folder.RUN_ID]}, but the "
                f"folder now holds run {info[run_folder.RUN_ID]}: rerun `reversal-hf eval run {run_dir}`"
            )
    return Run(run_dir, info, metrics, _read_curves(run_dir))


def _read_curves(run_dir: Path) -> dict[str, Any] | None:
    """A run's curves.json, checked: a list of points, each with a numeric step and epoch and blocks of numbers."""
    path = run_folder.curves_path(run_dir)
    if not path.is_file():
        return None
    curves = _read_json(path)
    points = curves.get("points")
    if not isinstance(points, list):
        raise ReportInputError(f"{path}: field 'points' is not a list")
    for index, point in enumerate(points):
        if not isinstance(point, dict) or not all(_is_number(point.get(key)) for key in ("step", "epoch")):
            raise ReportInputError(f"{path}: points[{index}] has no numeric 'step' and 'epoch'")
        for block, values in point.items():
            if isinstance(values, dict) and not all(v is None or _is_number(v) for v in values.values()):
                raise ReportInputError(f"{path}: points[{index}].{block} holds a value that is not a number")
    return curves


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Every folder, in the order given (a folder given twice counts once)."""
    if not run_dirs:
        raise ReportInputError("no run folders given")
    unique: dict[Path, Path] = {}
    for run_dir in map(Path, run_dirs):
        unique.setdefault(run_dir.resolve(), run_dir)
    return [load_run(run_dir) for run_dir in unique.values()]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


@dataclass
class RunGroup:
    """Seeds of one configuration; `varying` holds the hyperparameters that set it apart within its family."""

    experiment: str
    recipe: str
    model: str
    training_mode: str
    hyperparameters: dict[str, Any]
    runs: list[Run] = field(default_factory=list)
    varying: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> tuple[str, str, str, str]:
        return self.experiment, self.recipe, self.model, self.training_mode

    @property
    def label(self) -> str:
        mode = "" if self.training_mode == "full" else f", {self.training_mode}"
        points = ", ".join(f"{key}={value}" for key, value in self.varying.items())
        return f"{self.recipe} ({self.model}{mode})".lstrip() + (f" [{points}]" if points else "")

    @property
    def run_dirs(self) -> list[str]:
        return [run.name for run in self.runs]

    def metrics(self) -> list[tuple[str, dict[str, Any]]]:
        """(run folder, that run's metrics for this group's experiment), one per seed."""
        return [(run.name, run.metrics[self.experiment]) for run in self.runs]


def group_runs(runs: list[Run], experiment: str) -> list[RunGroup]:
    """Runs with `experiment` metrics, grouped over seeds, in the order their first run was given."""
    groups: dict[tuple[str, ...], RunGroup] = {}
    for run in runs:
        if experiment not in run.metrics:
            continue
        key = (experiment, run.recipe, run.model, run.training_mode, _canonical(run.hyperparameters))
        group = groups.setdefault(
            key, RunGroup(experiment, run.recipe, run.model, run.training_mode, run.hyperparameters)
        )
        group.runs.append(run)
    families: dict[tuple[str, ...], list[RunGroup]] = {}
    for group in groups.values():
        families.setdefault(group.family, []).append(group)
    for members in families.values():
        axes = _axes(members)
        for group in members:
            group.varying = {key: group.hyperparameters.get(key) for key in axes}
    return list(groups.values())


def _axes(members: list[RunGroup]) -> list[str]:
    """The hyperparameters that tell a family's groups apart, leaving out those the chosen ones determine."""
    keys = {key for group in members for key in group.hyperparameters}
    ordered = [k for k in PREFERRED_AXES if k in keys] + sorted(keys - set(PREFERRED_AXES))
    axes: list[str] = []
    for key in ordered:
        value_at: dict[str, str] = {}
        for group in members:
            point = _canonical([group.hyperparameters.get(axis) for axis in axes])
            value_at.setdefault(point, _canonical(group.hyperparameters.get(key)))
            if value_at[point] != _canonical(group.hyperparameters.get(key)):
                axes.append(key)
                break
    return axes
