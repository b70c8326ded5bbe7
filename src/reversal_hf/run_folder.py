"""The run folder contract (docs/ARCHITECTURE.md, "Run folders"): its file names, `run_info.json`, the evaluation
files under `eval/`, and the identity of the dataset a run was trained and evaluated on.

Training writes `run_info.json` last, so its presence marks a finished run; evaluators write their metrics file last,
so its presence marks a finished evaluation. Every module that reads or writes these files goes through here.
"""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

from reversal_hf import files
from reversal_hf.paths import REPO_ROOT

RUN_INFO = "run_info.json"
EVAL_DIRNAME = "eval"
BUILD_INFO = "build_info.json"
METRICS_SUFFIX = "_metrics.json"
CURVES = "curves.json"  # held-out metrics measured during training (`evaluation.curves`)
OPENAI_TRAINING_MODE = "openai"  # run_info.json's training_mode of a job run through OpenAI's fine-tuning API
RUN_ID = "run_id"  # in run_info.json and the metrics files: which training run's weights they describe
# How B.8's shuffled reverse prompts were drawn (`prompt_tuning.shuffled_reverse_prompts` in exp1 metrics): another
# fact's prompt under the same template since 2026-12-05; any other fact's prompt before, in metrics that also carry
# no run id (both changes landed together).
SHUFFLED_SAME_TEMPLATE = "same template"
SHUFFLED_ANY_TEMPLATE = "any template (before 2026-12-05)"
RUN_START = "run_start.json"  # a run in progress: its run id and resolved recipe, which resuming it must match
TRAIN_LOCK = ".train.lock"  # the pid (and host) of the job training into the folder
TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")


class ModelFilesError(ValueError):
    """A model folder that cannot be loaded as it is (a weight file cut short, a tokenizer file missing)."""


class OutputDirError(ValueError):
    """An output path that cannot hold a folder: a file, under a file, or not writable."""


def run_info_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RUN_INFO


def is_finished(run_dir: str | Path) -> bool:
    """Whether training finished in `run_dir` (it writes `run_info.json` last)."""
    return run_info_path(run_dir).is_file()


def read_run_info(run_dir: str | Path) -> dict[str, Any] | None:
    """A training run's `run_info.json`, or None for a folder without one (a plain model, an Exp 2 evaluation).

    A file that is not a JSON object raises `files.FileFormatError` naming it.
    """
    return _read_if_present(run_info_path(run_dir))


def resolved_config(run_info: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe a run was trained with, as its run_info.json records it (empty for a model that is not a run)."""
    return (run_info or {}).get("resolved_config") or {}


def _read_if_present(path: Path) -> dict[str, Any] | None:
    return files.read_json(path) if path.is_file() else None


def write_run_info(run_dir: str | Path, info: dict[str, Any]) -> None:
    files.write_json(run_info_path(run_dir), info)


def curves_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CURVES


def read_curves(run_dir: str | Path) -> dict[str, Any] | None:
    """A run's learning curves, or None for a run trained without `eval_curves`."""
    return _read_if_present(curves_path(run_dir))


def write_curves(run_dir: str | Path, curves: dict[str, Any]) -> None:
    files.write_json(curves_path(run_dir), curves)


def run_start_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / RUN_START


def read_run_start(run_dir: str | Path) -> dict[str, Any] | None:
    """The run id and resolved recipe of the run whose checkpoints the folder holds, or None (none recorded)."""
    return _read_if_present(run_start_path(run_dir))


def write_run_start(run_dir: str | Path, run_id: str, resolved: dict[str, Any]) -> None:
    files.write_json(run_start_path(run_dir), {RUN_ID: run_id, "resolved_config": resolved})


def new_run_id() -> str:
    """A fresh id for a training run: its metrics carry it, so scores of weights since replaced are recognised."""
    return uuid.uuid4().hex


def scored_other_weights(run_info: dict[str, Any], metrics: dict[str, Any]) -> bool:
    """Whether `metrics` scored another training run's weights than those `run_info` describes (a folder retrained
    after its evaluation). A file without a run id (older code, committed results) is unknown, not stale."""
    scored, trained = metrics.get(RUN_ID), run_info.get(RUN_ID)
    return scored is not None and trained is not None and scored != trained


def has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_VOCABULARY_FILES)


def check_model_files(folder: Path, *, tokenizer: bool = True) -> None:
    """The files a local model folder loads from are whole, else one `ModelFilesError` line naming the file.

    transformers loads a folder without `tokenizer_config.json` silently, with no eos or pad token; one without
    `tokenizer.json` fails with a message cut off mid-sentence; a cut `*.safetensors` file with a traceback.
    """
    from safetensors import SafetensorError, safe_open

    if tokenizer and not has_tokenizer(folder):
        raise ModelFilesError(f"{folder}: no tokenizer ({', '.join(TOKENIZER_VOCABULARY_FILES)})")
    if tokenizer and not (folder / TOKENIZER_CONFIG).is_file():
        raise ModelFilesError(f"{folder / TOKENIZER_CONFIG}: missing (the tokenizer's special tokens)")
    for path in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(path, framework="pt"):  # reads the header, checks that the data covers it
                pass
        except (SafetensorError, OSError) as error:
            raise ModelFilesError(f"{path}: unreadable weights ({str(error).splitlines()[0]})") from error


def check_output_dir(path: str | Path) -> None:
    """`path` is, or can be made, a folder this process can write in, else one `OutputDirError` line: found before
    the work whose results could not be saved."""
    path = Path(path).absolute()
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        where = "is a file" if existing == path else f"cannot be created: {existing} is a file"
        raise OutputDirError(f"{path}: {where}, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise OutputDirError(f"{path}: cannot write in {existing} ({error.strerror})") from error


def eval_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / EVAL_DIRNAME


def metrics_path(output_dir: str | Path, experiment: str) -> Path:
    """`<output_dir>/eval/<experiment>_metrics.json`."""
    return eval_dir(output_dir) / f"{experiment}{METRICS_SUFFIX}"


def examples_path(output_dir: str | Path, experiment: str) -> Path:
    """`<output_dir>/eval/<experiment>_examples.parquet`: one row per evaluated example."""
    return eval_dir(output_dir) / f"{experiment}_examples.parquet"


def read_metrics(output_dir: str | Path, experiment: str) -> dict[str, Any] | None:
    """An experiment's metrics of a folder, or None before its evaluation finished."""
    return _read_if_present(metrics_path(output_dir, experiment))


def read_all_metrics(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every `eval/<experiment>_metrics.json` of a folder, keyed by its `experiment` field (else the file name)."""
    metrics = {}
    for path in sorted(eval_dir(output_dir).glob(f"*{METRICS_SUFFIX}")):
        payload = files.read_json(path)
        metrics[payload.get("experiment", path.name.removesuffix(METRICS_SUFFIX))] = payload
    return metrics


def write_metrics(output_dir: str | Path, experiment: str, metrics: dict[str, Any]) -> Path:
    """Write the metrics file (strict JSON, NaN as null); evaluators call this last."""
    path = metrics_path(output_dir, experiment)
    files.write_json(path, metrics)
    return path


def write_table(path: str | Path, table: Any) -> None:
    """A per-example pandas table as Parquet (`.parquet`) or CSV (anything else), atomically."""
    path = Path(path)
    if path.suffix == ".parquet":
        files.write_atomically(path, lambda tmp: table.to_parquet(tmp, index=False))
    else:
        files.write_atomically(path, lambda tmp: table.to_csv(tmp, index=False))


def resolve_local(name_or_path: str) -> str:
    """A dataset or model as a folder when one exists, else the Hub id unchanged.

    A relative folder is found from the working directory, else from the repository root (`run_info.json` records
    names such as `build/datasets/reversal-exp1` relative to the repository).
    """
    if Path(name_or_path).exists() or not (REPO_ROOT / name_or_path).exists():
        return name_or_path
    return str(REPO_ROOT / name_or_path)


def content_hash(dataset: str) -> str | None:
    """The `content_hash` of a local dataset build (`build_info.json`), None for a Hub id."""
    build_info = Path(resolve_local(dataset)) / BUILD_INFO
    return files.read_json(build_info).get("content_hash") if build_info.is_file() else None


def load_dataset_split(name: str, config: str, split: str | None = None, revision: str | None = None) -> Any:
    """A dataset split (`split=None`: the config's `DatasetDict`) as training, evaluation and the OpenAI arm read it.

    A local folder is read from the very shard bytes its `build_info.json` hashes (`hub_layout.load_build`; a changed
    or cut shard is a one-line `LocalDatasetError`), never through `load_dataset`, whose cache keys a local folder
    by name and card and would serve another same-named folder's rows. A Hub id goes through `load_dataset` at
    `revision`.
    """
    from reversal_hf.data.hub_layout import load_build

    folder = Path(resolve_local(name))
    if folder.is_dir():
        return load_build(folder, config, split)
    from datasets import load_dataset

    return load_dataset(name, config, split=split, revision=revision)


def dataset_identity(name: str, revision: str | None, *, config: str | None = None) -> dict[str, Any]:
    """The `dataset` block of run_info.json and the metrics files: name, revision and the build's content hash, and
    the config a run trained on (run_info.json only)."""
    identity = {"name": name, "revision": revision, "content_hash": content_hash(name)}
    return identity if config is None else {"name": name, "config": config, **identity}


def git_commit() -> str | None:
    """The repository's HEAD commit, recorded in run_info.json; None outside a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def metrics_header(
    experiment: str, model_or_run_dir: str | Path, run_info: dict[str, Any] | None, **fields: Any
) -> dict[str, Any]:
    """The fields a metrics file starts with: the experiment, the run folder (None for a model not trained here), the
    model (a run's base model), the run id of the weights scored, then `fields` in order."""
    return {
        "experiment": experiment,
        "run_dir": str(model_or_run_dir) if run_info is not None else None,
        "model": (run_info or {}).get("model_name_or_path") or str(model_or_run_dir),
        RUN_ID: (run_info or {}).get(RUN_ID),  # the weights scored (`scored_other_weights`)
        **fields,
    }
