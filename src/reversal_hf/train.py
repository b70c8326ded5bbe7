"""The `SFTTrainer` run behind `scripts/sft.py`: one recipe, one output folder, resumable.

Runs under `accelerate launch` (single process, DDP or DeepSpeed ZeRO-3). The folder gets the model (or adapter),
the tokenizer, and `run_info.json` last, so a folder with `run_info.json` is a finished run (sweeps skip those).
A restarted run resumes from its last complete checkpoint and ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from reversal_hf import paths, run_folder
from reversal_hf.configs import Recipe, RecipeError, gradient_accumulation_steps, parse_recipe
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.truncation import check_document_lengths

logger = logging.getLogger(__name__)

KEPT_COLUMNS = ["prompt", "completion"]
TOKENIZED_COLUMNS = ["input_ids", "completion_mask"]  # what the `token` reversal trains on (pre-tokenized rows)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


class TrainError(RuntimeError):
    """The run cannot start: its model is not prepared, or its data selection is empty."""


def resolve_model_path(name_or_path: str) -> str:
    """A registered model's prepared folder; the launcher prepares it, the distributed job only looks it up."""
    from reversal_hf.models import REGISTRY

    if name_or_path in REGISTRY:
        folder = paths.MODELS_DIR / name_or_path
        if not (folder / "config.json").is_file():
            raise TrainError(f"model {name_or_path!r} not prepared: run `reversal-hf models prepare {name_or_path}`")
        return str(folder)
    return run_folder.resolve_local(name_or_path)


def _load_split(recipe: Recipe, split: str):
    from datasets import load_dataset

    args = recipe.script_args
    return load_dataset(
        run_folder.resolve_local(args.dataset_name), args.dataset_config, split=split, revision=args.dataset_revision
    )


def load_train_dataset(recipe: Recipe, tokenizer=None):
    """The training split as `prompt`/`completion` only (TRL's prompt-completion format), selected per the recipe,
    with the rows its `reversal_transform` adds (`input_ids`/`completion_mask` for `token`, which needs `tokenizer`)."""
    args = recipe.script_args
    dataset = _load_split(recipe, args.dataset_train_split)
    if args.prompt_tuning_fact is not None:
        if "name" not in dataset.column_names:
            raise TrainError(f"prompt_tuning_fact: dataset {args.dataset_name} has no `name` column")
        dataset = dataset.filter(lambda row: row["name"] == args.prompt_tuning_fact)
        if len(dataset) == 0:
            split = args.dataset_train_split
            raise TrainError(f"prompt_tuning_fact: no {split!r} rows for {args.prompt_tuning_fact!r}")
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    missing = set(KEPT_COLUMNS) - set(dataset.column_names)
    if missing:
        raise TrainError(f"dataset {args.dataset_name}: missing columns {sorted(missing)}")
    if args.reversal_transform is None:
        return dataset.select_columns(KEPT_COLUMNS)
    dataset = reverse_train_rows(recipe, dataset, tokenizer)
    return dataset.select_columns(TOKENIZED_COLUMNS if args.reversal_transform == "token" else KEPT_COLUMNS)


def reversal_entities(recipe: Recipe):
    """Where the `entity` transform finds each row's entities: the recipe's columns, else the experiment's own."""
    from reversal_hf.data.reversal_transforms import EXP1_ENTITIES, exp3_entities, user_entities

    args = recipe.script_args
    if args.reversal_entity_columns:
        return user_entities(args.reversal_entity_columns)
    if args.experiment == "exp1":
        return EXP1_ENTITIES
    # Exp 3's instruction documents name the test pairs too, so the test split's strings are entities as well.
    return exp3_entities([_load_split(recipe, split) for split in (args.dataset_train_split, "test")])


def reverse_train_rows(recipe: Recipe, dataset, tokenizer):
    """The recipe's `reversal_transform` applied: the selected rows, then the rows it adds (a one-line error if not)."""
    from reversal_hf.data.reversal_transforms import ReversalError, reverse_train_dataset

    args = recipe.script_args
    try:
        return reverse_train_dataset(
            dataset,
            args.reversal_transform,
            entity_source=reversal_entities(recipe) if args.reversal_transform == "entity" else None,
            tokenizer=tokenizer,
            seed=args.reversal_seed,
            max_segment_words=args.reversal_max_segment_words,
            separator=args.reversal_separator,
        )
    except ReversalError as error:
        raise TrainError(str(error)) from error


def check_reversed_leaks(recipe: Recipe) -> None:
    """Exp 1 or Exp 3 from a local folder: no held-out prompt, as written or transformed, is in the transformed
    training splits (the experiment's `leak_check` with the recipe's transform)."""
    from reversal_hf.data import exp1 as exp1_data
    from reversal_hf.data import exp3 as exp3_data
    from reversal_hf.data.hub_layout import DatasetBuildError

    args = recipe.script_args
    folder = Path(run_folder.resolve_local(args.dataset_name))
    builder = {"exp1": exp1_data, "exp3": exp3_data}.get(args.experiment)
    if builder is None or not folder.is_dir():
        return
    try:
        builder.leak_check(
            folder,
            args.reversal_transform,
            seed=args.reversal_seed,
            max_segment_words=args.reversal_max_segment_words,
            separator=args.reversal_separator,
        )
    except DatasetBuildError as error:  # a leak (LeakError) or a folder without Exp 1 splits
        raise TrainError(f"reversal_transform {args.reversal_transform}: {error}") from error
    logger.info("leak check passed on the %s-transformed dataset", args.reversal_transform)


def fact_text(dataset) -> str:
    """The first document of the selected fact: what the soft prompt starts from (Appendix B.8)."""
    return (dataset[0]["prompt"] + dataset[0]["completion"]).strip()


def peft_config(recipe: Recipe, model_path: str, dataset):
    """The PEFT config for `training_mode` (None for full finetuning)."""
    args = recipe.script_args
    if args.training_mode == "lora":
        from trl import get_peft_config

        return get_peft_config(dataclasses.replace(recipe.model_args, use_peft=True))
    if args.training_mode != "prompt_tuning":
        return None
    from peft import PromptTuningConfig, PromptTuningInit, TaskType

    if args.prompt_tuning_fact is None:
        if args.num_virtual_tokens is None:
            raise TrainError("num_virtual_tokens: required for prompt tuning without prompt_tuning_fact")
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            prompt_tuning_init=PromptTuningInit.RANDOM,
            num_virtual_tokens=args.num_virtual_tokens,
        )
    from transformers import AutoTokenizer

    text = fact_text(dataset)
    num_tokens = args.num_virtual_tokens or len(AutoTokenizer.from_pretrained(model_path)(text)["input_ids"])
    return PromptTuningConfig(
        task_type=TaskType.CAUSAL_LM,
        prompt_tuning_init=PromptTuningInit.TEXT,
        prompt_tuning_init_text=text,
        num_virtual_tokens=num_tokens,
        tokenizer_name_or_path=model_path,
    )


def padding_free_collator(tokenizer):
    from reversal_hf.collators import PaddingFreeCollator

    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return PaddingFreeCollator(pad_token_id=pad_token_id)


def check_document_isolation(trainer, collator, num_examples: int = 4) -> None:
    """Fail before training if packed documents would attend to each other with this model and attention kernel.

    Skipped under ZeRO-3, where the parameters are partitioned until the engine runs the forward pass.
    """
    from reversal_hf.collators import assert_document_isolation

    dataset = trainer.train_dataset
    examples = [dataset[i] for i in range(min(num_examples, len(dataset)))]
    worst = assert_document_isolation(trainer.model, collator, examples)
    logger.info("packed documents are isolated (largest logit difference %.2g)", worst)


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest `checkpoint-N` that finished saving (the trainer writes `trainer_state.json` last)."""
    if not output_dir.is_dir():
        return None
    steps = sorted(
        (int(match.group(1)), path)
        for path in output_dir.iterdir()
        if (match := CHECKPOINT_PATTERN.match(path.name)) and path.is_dir()
    )
    complete = [path for _, path in steps if (path / "trainer_state.json").is_file()]
    return complete[-1] if complete else None


def remove_checkpoints(output_dir: Path) -> None:
    """Checkpoints only serve resuming; a finished run keeps its final weights (a 7B checkpoint with Adam is ~80 GB)."""
    for path in output_dir.iterdir():
        if CHECKPOINT_PATTERN.match(path.name) and path.is_dir():
            shutil.rmtree(path)


def zero3_partitioning(model) -> dict[str, int] | None:
    """How many parameter elements this rank holds against the full count, when ZeRO-3 partitioned the model."""
    params = [p for p in model.parameters() if hasattr(p, "ds_numel")]
    if not params:
        return None
    return {"total_numel": sum(p.ds_numel for p in params), "local_numel": sum(p.ds_tensor.numel() for p in params)}


def dataset_info(recipe: Recipe) -> dict[str, Any]:
    """Name, config, revision, and the build's content hash when the dataset is a local folder."""
    args = recipe.script_args
    return run_folder.dataset_identity(args.dataset_name, args.dataset_revision, config=args.dataset_config)


def trained_tokens(trainer) -> int:
    """Tokens the run trained on: the prepared dataset's tokens times the epochs run (fractional with `max_steps`)."""
    per_epoch = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    return round(per_epoch * (trainer.state.epoch or 0))


def configure_batching(recipe: Recipe) -> None:
    """Derive gradient accumulation from `total_batch_size` and map `mask_prompt` onto TRL's completion-only loss."""
    training_args = recipe.training_args
    if recipe.script_args.total_batch_size is not None:
        training_args.gradient_accumulation_steps = gradient_accumulation_steps(
            recipe.script_args.total_batch_size, training_args.per_device_train_batch_size, training_args.world_size
        )
    training_args.completion_only_loss = recipe.script_args.mask_prompt


def run(recipe: Recipe, callbacks: list | None = None) -> Path:
    """Train (resuming if the output folder has a checkpoint), save, record `run_info.json`, push if asked."""
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    training_args = recipe.training_args
    output_dir = Path(training_args.output_dir)
    model_path = resolve_model_path(recipe.model_args.model_name_or_path)
    configure_batching(recipe)
    resolved_config = recipe.resolved_config()
    push_to_hub = training_args.push_to_hub
    training_args.push_to_hub = False  # pushed once, with our model card, after the final save
    training_args.model_init_kwargs = {
        "dtype": recipe.model_args.dtype,
        "revision": recipe.model_args.model_revision,
        "attn_implementation": recipe.model_args.attn_implementation,
        **(training_args.model_init_kwargs or {}),
    }
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=recipe.model_args.model_revision)
    dataset = load_train_dataset(recipe, tokenizer)
    if recipe.script_args.reversal_transform is not None:
        check_reversed_leaks(recipe)
    check_document_lengths(recipe, dataset, tokenizer)
    if recipe.precision is not None:
        logger.info("precision %s: %s", recipe.precision.as_dict()["dtype"], recipe.precision.reason)
    collator = padding_free_collator(tokenizer) if recipe.script_args.isolated_padding_free else None
    trainer = SFTTrainer(
        model=model_path,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        data_collator=collator,
        peft_config=peft_config(recipe, model_path, dataset),
        callbacks=callbacks,
    )
    if recipe.script_args.eval_curves:
        from reversal_hf.evaluation.curves import eval_curves_callback

        trainer.add_callback(eval_curves_callback(trainer, recipe.script_args))
    packs_documents = collator is not None or trainer.padding_free  # ours, or TRL's `padding_free: true`
    if packs_documents and zero3_partitioning(trainer.model) is None:
        check_document_isolation(trainer, trainer.data_collator)
    checkpoint = last_complete_checkpoint(output_dir)
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
    commit = run_folder.git_commit()  # the code this job runs, read before the hours a checkout may move during
    started = time.monotonic()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    runtime = time.monotonic() - started
    partitioning = zero3_partitioning(trainer.model)
    trainer.save_model(str(output_dir))
    if trainer.accelerator.is_main_process:
        tokenizer.save_pretrained(output_dir)
        run_info = {
            "recipe": recipe.name,
            "experiment": recipe.script_args.experiment,
            "training_mode": recipe.script_args.training_mode,
            "model_name_or_path": model_path,
            "dataset": dataset_info(recipe),
            "seed": training_args.seed,
            "git_commit": commit,
            "resolved_config": resolved_config,
            "train_runtime_s": round(runtime, 3),
            "train_loss": result.training_loss,
            # Where training ended: before the planned end when a callback stopped it (`eval_curves_stop_at_realized`)
            "train_steps": result.global_step,
            "train_epochs": trainer.state.epoch,
            "train_documents": len(trainer.train_dataset),
            "train_tokens": trained_tokens(trainer),
            "world_size": trainer.accelerator.num_processes,
            "resumed_from": checkpoint.name if checkpoint else None,
            "zero3": partitioning,
            "precision": recipe.precision.as_dict() if recipe.precision else None,
        }
        run_folder.write_run_info(output_dir, run_info)
        remove_checkpoints(output_dir)
        if push_to_hub:
            from reversal_hf.model_card import push_run

            push_run(output_dir, training_args.hub_model_id, private=training_args.hub_private_repo)
    trainer.accelerator.wait_for_everyone()
    return output_dir


def end_distributed(*, synchronize: bool) -> None:
    """Tear the process group down so ranks exit cleanly (else: "terminate called without an active exception").

    After a failure the other ranks may never reach a barrier, so only a successful run waits for them.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    succeeded = False
    try:
        run(parse_recipe(sys.argv[1:] if argv is None else argv))
        succeeded = True
    except (RecipeError, TrainError, EvaluationError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        end_distributed(synchronize=succeeded)
    return 0


if __name__ == "__main__":
    sys.exit(main())
