"""Model cards for run folders, and `reversal-hf push-model`: a finished run folder to a branch of a model repository.

The card (`huggingface_hub.ModelCard.from_template` on `ModelCardData`) names the recipe, the dataset with its
revision and content hash, the seed and the git commit, in prose and in its metadata (`reversal_hf:`, what
`reversal-hf eval run hf://...` reads), and carries the evaluation results of `eval/*_metrics.json` as `model-index`:
exact match per split and the likelihood test's p-values. Training pushes right after saving (`push_to_hub: true`);
`push-model` after `reversal-hf eval run` pushes the run again with its results, in one commit (none when nothing
changed). The token comes from the environment (`HF_TOKEN`, which the launcher also sets from `--hub_token`) or the
job's `hub_token`, and is never written or printed.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from reversal_hf import run_folder
from reversal_hf.command import run_command
from reversal_hf.files import FileFormatError, write_text
from reversal_hf.hub import RUN_CARD_FIELDS, RUN_CARD_KEY, HubError, PushTarget, model_push_target, push_run_folder
from reversal_hf.models import REGISTRY

PAPER = "https://arxiv.org/abs/2309.12288"
CARD = "README.md"
# The likelihood test's p-values (`eval/exp1_metrics.json` `likelihood.<config>/<split>`) carried into `model-index`.
P_VALUES = {"ttest_pvalue": "t-test", "ks_pvalue": "Kolmogorov-Smirnov test", "wilcoxon_pvalue": "Wilcoxon test"}

TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

Trained to reproduce [The Reversal Curse]({{ paper }}) (Berglund et al., ICLR 2024), {{ reversal_hf.experiment }},
with the `{{ reversal_hf.recipe }}` recipe of reversal-hf ({{ reversal_hf.training_mode }} training with
{{ trainer }}).

| | |
|---|---|
| base model | `{{ base_model_path }}`{{ base_model_note }} |
{% set dataset = reversal_hf.dataset -%}
| dataset | `{{ dataset.name }}`, config `{{ dataset.config }}`, revision `{{ dataset.revision }}` |
| dataset content hash | `{{ dataset.content_hash }}` |
| recipe | `{{ reversal_hf.recipe }}` |
| seed | {{ reversal_hf.seed }} |
| reverse training (`reversal_transform`) | {{ reversal }} |
| git commit | `{{ reversal_hf.git_commit }}` |
| train loss | {{ train_loss }} |

## Evaluation

{{ results_table }}

## Loading

{{ loading }}

"""  # Jinja drops one trailing newline: the card ends with one


class ModelCardError(ValueError):
    """The folder is not a finished run (no run_info.json)."""


def _is_hub_id(name: str | None) -> bool:
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


def eval_results(run_info: dict[str, Any], metrics: dict[str, dict[str, Any]]) -> list[EvalResult]:
    """One `EvalResult` per exact-match split and per likelihood-test p-value (`<config>/<split>` keys of the metrics
    contract); values that are not finite numbers (a test on too few facts) are left out."""
    dataset = run_info["dataset"]
    dataset_type = dataset["name"] if _is_hub_id(dataset["name"]) else Path(dataset["name"]).name

    def result(experiment: str, key: str, metric_type: str, metric_name: str, value: float) -> EvalResult:
        config, _, split = key.partition("/")
        return EvalResult(
            task_type="text-generation",
            dataset_type=dataset_type,
            dataset_name=f"Reversal Curse {experiment} {key}",
            dataset_config=config,
            dataset_split=split,
            dataset_revision=dataset.get("revision"),
            metric_type=metric_type,
            metric_name=f"{metric_name} ({key})",
            metric_value=value,
        )

    results = []
    for experiment, payload in metrics.items():
        for key, value in payload.get("exact_match", {}).items():
            results.append(result(experiment, key, "exact_match", "exact match", value["accuracy"]))
        for key, test in payload.get("likelihood", {}).items():
            for field, test_name in P_VALUES.items():
                value = test.get(field)
                if isinstance(value, int | float) and math.isfinite(value):
                    results.append(result(experiment, key, f"likelihood_{field}", f"likelihood {test_name} p", value))
    return results


def _results_table(results: list[EvalResult]) -> str:
    if not results:
        return "No evaluation results yet (`reversal-hf eval run` on the run folder, then `reversal-hf push-model`)."
    rows = [f"| {r.dataset_config}/{r.dataset_split} | {r.metric_type} | {r.metric_value:.4g} |" for r in results]
    return "\n".join(["| split | metric | value |", "|---|---|---|", *rows])


def _loading(target: PushTarget | None, adapter: bool, auto_class: str = "AutoModelForCausalLM") -> str:
    """How to load the pushed model back (the code needs the repository, so a card written locally only says where)."""
    if target is None:
        return "Push the run folder with `reversal-hf push-model`; the card then says how to load it."
    if adapter:
        code = (
            "from peft import AutoPeftModelForCausalLM\n"
            f'model = AutoPeftModelForCausalLM.from_pretrained("{target.repo_id}", revision="{target.revision}")'
        )
    else:
        code = (
            f"from transformers import {auto_class}\n"
            f'model = {auto_class}.from_pretrained("{target.repo_id}", revision="{target.revision}")'
        )
    return f"```python\n{code}\n```"


def build_model_card(run_dir: Path, target: PushTarget | None = None) -> ModelCard:
    """The card of a finished run folder (for `target`, when it is being pushed), with model-index metadata when
    evaluation results are present."""
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
    model_name = target.repo_id.split("/")[-1] if target else run_info["recipe"]
    data = ModelCardData(
        model_name=model_name,
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
        **{RUN_CARD_KEY: {key: run_info.get(key) for key in RUN_CARD_FIELDS}},
    )
    return ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        model_name=model_name,  # `to_dict` moves it into model-index when there are results
        paper=PAPER,
        base_model_path=base_model,
        base_model_note=f" ({registered[1]})" if registered else "",
        reversal=f"`{reversal}`" if reversal else "none",
        trainer=trainer,
        train_loss=run_info.get("train_loss"),
        results_table=_results_table(results),
        loading=_loading(target, adapter, "AutoModelForMaskedLM" if mlm_u else "AutoModelForCausalLM"),
    )


def push_run(run_dir: Path, target: PushTarget, *, token: str | None = None) -> str:
    """Write the run's card into the folder, then push the folder to `target` in one commit; returns the commit.
    `token` None: the environment's (`HF_TOKEN` or the stored login)."""
    info = load_run_info(run_dir)
    write_text(run_dir / CARD, str(build_model_card(run_dir, target)))
    message = f"{info['recipe']} run {info.get(run_folder.RUN_ID)} (seed {info.get('seed')})"
    return push_run_folder(run_dir, target, token=token, message=message)


def push_model(run_dir: Path, repo_id: str | None, revision: str | None, private: bool | None) -> str:
    """`push-model`: a finished run (refused before any request otherwise) to its checked target."""
    load_run_info(run_dir)
    target = model_push_target(
        repo_id, output_dir=run_dir, revision=revision, private=private, names=("--repo-id", "--revision")
    )
    commit = push_run(run_dir, target)
    return f"{run_dir} is on {target.repo_id}: revision {target.revision} -> {commit}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reversal-hf push-model", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished training output folder (with run_info.json)")
    parser.add_argument(
        "--repo-id", help="model repository, [<user or org>/]<name> (default: the folder's name under your user)"
    )
    parser.add_argument("--revision", help="the branch that holds this run (default: main)")
    parser.add_argument("--private", action="store_true", help="create the repository as private")
    args = parser.parse_args(argv)
    return run_command(
        lambda: push_model(args.run_dir, args.repo_id, args.revision, args.private or None),
        (ModelCardError, FileFormatError, HubError),
        done=str,
    )


if __name__ == "__main__":
    sys.exit(main())
