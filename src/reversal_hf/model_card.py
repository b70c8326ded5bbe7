"""Model cards for run folders, and pushing a run folder to the Hub with its card.

The card names the recipe, the dataset and its revision/content hash, the git commit, and the evaluation results
found in `eval/*_metrics.json` as model-index metadata. Training pushes right after saving (`--push_to_hub`); run
`reversal-hf push-model <run_dir> --hub-model-id <id>` after evaluation to push again with the results.
The token comes from the environment (`HF_TOKEN`, which the launcher also sets from `--hub_token`) or the job's
`hub_token`, and is never written or printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from reversal_hf import run_folder
from reversal_hf.command import run_command
from reversal_hf.files import FileFormatError
from reversal_hf.models import REGISTRY

PAPER = "https://arxiv.org/abs/2309.12288"
PUSH_IGNORE = ["checkpoint-*", "checkpoint-*/**", ".*"]


class ModelCardError(ValueError):
    """The folder is not a finished run (no run_info.json) or its metrics are unreadable."""


def _is_hub_id(name: str | None) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not name or Path(name).exists():
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def load_run_info(run_dir: Path) -> dict[str, Any]:
    info = run_folder.read_run_info(run_dir)
    if info is None:
        raise ModelCardError(f"{run_dir}: no {run_folder.RUN_INFO} (not a finished training run)")
    return info


def eval_results(run_info: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> list:
    """One `EvalResult` per exact-match split (`<config>/<split>` keys of the metrics contract)."""
    from huggingface_hub import EvalResult

    dataset = run_info["dataset"]
    results = []
    for experiment, payload in metrics.items():
        for key, value in payload.get("exact_match", {}).items():
            config, _, split = key.partition("/")
            results.append(
                EvalResult(
                    task_type="text-generation",
                    dataset_type=dataset["name"],
                    dataset_name=f"Reversal Curse {experiment} {key}",
                    dataset_config=config,
                    dataset_split=split,
                    dataset_revision=dataset.get("revision"),
                    metric_type="exact_match",
                    metric_name=f"exact match ({key})",
                    metric_value=value["accuracy"],
                )
            )
    return results


def _results_table(results: list) -> str:
    if not results:
        return "No evaluation results yet (run `reversal-hf eval` on the run folder, then push again)."
    rows = [f"| {r.dataset_config}/{r.dataset_split} | {r.metric_value:.3f} |" for r in results]
    return "\n".join(["| split | exact match |", "|---|---|", *rows])


def build_model_card(run_dir: Path, model_name: str | None = None):
    """The card of a finished run folder, with model-index metadata when evaluation results are present."""
    from huggingface_hub import ModelCard, ModelCardData

    run_info = load_run_info(run_dir)
    dataset = run_info["dataset"]
    metrics = run_folder.read_all_metrics(run_dir)
    # Scores of weights the folder no longer holds (retrained after its evaluation) are not this model's.
    results = eval_results(
        run_info, {k: m for k, m in metrics.items() if not run_folder.scored_other_weights(run_info, m)}
    )
    base_model = run_info["model_name_or_path"]
    mlm_u = run_info["training_mode"] == "mlm_u"
    trainer = "`transformers.Trainer`" if mlm_u else "TRL's `SFTTrainer`"
    adapter = run_info["training_mode"] not in ("full", "mlm_u")
    recipe = run_folder.resolved_config(run_info)
    reversal = recipe.get("reversal_transform")
    registered = REGISTRY.get(recipe.get("model_name_or_path", ""))
    data = ModelCardData(
        model_name=model_name or run_info["recipe"],
        base_model=base_model if _is_hub_id(base_model) else None,
        datasets=[dataset["name"]] if _is_hub_id(dataset["name"]) else None,
        library_name="peft" if adapter else "transformers",
        pipeline_tag="fill-mask" if mlm_u else "text-generation",
        tags=[
            "reversal-curse",
            "trl",
            "sft",
            run_info["experiment"],
            run_info["training_mode"],
            *([f"reverse-training-{reversal}"] if reversal else []),
        ],
        eval_results=results or None,
    )
    body = f"""
# {model_name or run_info["recipe"]}

Trained to reproduce [The Reversal Curse]({PAPER}) (Berglund et al., ICLR 2024), {run_info["experiment"]}, with
the `{run_info["recipe"]}` recipe of reversal-hf ({run_info["training_mode"]} training with {trainer}).

| | |
|---|---|
| base model | `{base_model}`{f" ({registered[1]})" if registered else ""} |
| dataset | `{dataset["name"]}`, config `{dataset["config"]}`, revision `{dataset.get("revision")}` |
| dataset content hash | `{dataset.get("content_hash")}` |
| recipe | `{run_info["recipe"]}` |
| seed | {run_info["seed"]} |
| reverse training (`reversal_transform`) | {f"`{reversal}`" if reversal else "none"} |
| git commit | `{run_info.get("git_commit")}` |
| train loss | {run_info.get("train_loss")} |

## Evaluation

{_results_table(results)}
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def check_push_target(repo_id: str | None, token: str | None = None) -> None:
    """A repository id the Hub accepts and a token to push with, checked before anything is written or trained."""
    from huggingface_hub import get_token
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not repo_id:
        raise ModelCardError("hub_model_id: required to push")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ModelCardError(f"hub_model_id: {str(error).splitlines()[0]}") from error
    if token is None and get_token() is None:
        raise ModelCardError("no Hub token to push with: set HF_TOKEN (or run `hf auth login`)")


def push_run(run_dir: Path, repo_id: str, *, private: bool | None = None, token: str | None = None) -> str:
    """Write the card into the folder and upload the folder (without checkpoints); returns the commit URL. `token`
    None: the environment's (`HF_TOKEN` or the stored login)."""
    from huggingface_hub import HfApi

    check_push_target(repo_id, token)
    build_model_card(run_dir, model_name=repo_id.split("/")[-1]).save(run_dir / "README.md")
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        folder_path=run_dir,
        ignore_patterns=PUSH_IGNORE,
        commit_message=f"Upload {load_run_info(run_dir)['recipe']} run",
    )
    return commit.commit_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reversal-hf push-model", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished training output folder")
    parser.add_argument("--hub-model-id", help="push to this repository (else only write README.md)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    args = parser.parse_args(argv)
    from huggingface_hub.errors import HfHubHTTPError

    def push_or_write() -> str | Path:
        if args.hub_model_id:
            return push_run(args.run_dir, args.hub_model_id, private=args.private or None)
        build_model_card(args.run_dir).save(args.run_dir / "README.md")
        return args.run_dir / "README.md"

    errors = (ModelCardError, FileFormatError, HfHubHTTPError)
    return run_command(push_or_write, errors, done=str, describe=lambda error: str(error).splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
