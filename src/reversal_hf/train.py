"""The training run behind `scripts/sft.py`: one recipe, one output folder, resumable; TRL's `SFTTrainer`, or for
`training_mode: mlm_u` a `transformers.Trainer` with the MLM-U objective (`reversal_hf.mlm_u`).

Runs under `accelerate launch` (single process, DDP or DeepSpeed ZeRO-3). The folder gets the model (or adapter),
the tokenizer, and `run_info.json` last, so a folder with `run_info.json` is a finished run (sweeps skip those).
A restarted run resumes from its last complete checkpoint and ends with the same weights as an uninterrupted one,
if its resolved recipe is the one the checkpoint was trained with (`run_start.json`); one job at a time trains into a
folder (`.train.lock`). A fresh run removes the folder's previous scores, and the Hub token never reaches the saved
training arguments. A run with `push_to_hub` checks its push target before it trains (`push_target`) and pushes the
finished folder with its card once, at the end (`model_card.push_run`), to `hub_model_id` at `hub_revision`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from reversal_hf import paths, run_folder
from reversal_hf.command import run_command
from reversal_hf.configs import Recipe, RecipeError, gradient_accumulation_steps, parse_recipe
from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.hub import HubError, PushTarget, model_push_target
from reversal_hf.truncation import check_document_lengths

logger = logging.getLogger(__name__)

KEPT_COLUMNS = ["prompt", "completion"]
TOKENIZED_COLUMNS = ["input_ids", "completion_mask"]  # what the `token` reversal trains on (pre-tokenized rows)
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# resolved_config keys a rerun may change and still resume: where it logs, checkpoints and pushes, not what it trains.
RESUME_FREE_PREFIXES = ("output_dir", "logging_", "save_", "hub_", "push_to_hub", "report_to", "run_name")
# `hub_strategy` values honoured by pushing the final folder once: the others push checkpoints, which stay local here.
FINAL_PUSH_STRATEGIES = ("end", "every_save")


class TrainError(RuntimeError):
    """The run cannot start: its model is not prepared, or its data selection is empty."""


def resolve_model_path(name_or_path: str) -> str:
    """A registered model's prepared folder (the launcher prepares it, the distributed job only looks it up), a local
    folder whose files are whole, or a Hub id."""
    from reversal_hf.models import REGISTRY

    if name_or_path in REGISTRY:
        folder = paths.MODELS_DIR / name_or_path
        if not (folder / "config.json").is_file():
            raise TrainError(f"model {name_or_path!r} not prepared: run `reversal-hf models prepare {name_or_path}`")
    else:
        folder = Path(run_folder.resolve_local(name_or_path))
    if folder.is_dir():
        try:
            run_folder.check_model_files(folder)
        except run_folder.ModelFilesError as error:
            raise TrainError(f"model_name_or_path: {error}") from error
    return str(folder) if folder.is_dir() else name_or_path


def _load_split(recipe: Recipe, split: str):
    """A split of the recipe's dataset; a local build whose shards are not the ones it hashed stops the run (in the
    launcher and in the job) with one line."""
    from reversal_hf.data.hub_layout import LocalDatasetError

    args = recipe.script_args
    try:
        return run_folder.load_dataset_split(args.dataset_name, args.dataset_config, split, args.dataset_revision)
    except LocalDatasetError as error:
        raise RecipeError(f"dataset_name: {error}") from error


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
    from reversal_hf.data.reversal.text import EXP1_ENTITIES, exp3_entities, user_entities

    args = recipe.script_args
    if args.reversal_entity_columns:
        return user_entities(args.reversal_entity_columns)
    if args.experiment == "exp1":
        return EXP1_ENTITIES
    # Exp 3's instruction documents name the test pairs too, so the test split's strings are entities as well.
    return exp3_entities([_load_split(recipe, split) for split in (args.dataset_train_split, "test")])


def reverse_train_rows(recipe: Recipe, dataset, tokenizer):
    """The recipe's `reversal_transform` applied: the selected rows, then the rows it adds (a one-line error if not)."""
    from reversal_hf.data.reversal.text import ReversalError
    from reversal_hf.data.reversal.training_set import reverse_train_dataset

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
    training splits (`leak_check` with the recipe's transform)."""
    from reversal_hf.data import leak_check
    from reversal_hf.data.hub_layout import DatasetBuildError

    args = recipe.script_args
    folder = Path(run_folder.resolve_local(args.dataset_name))
    if args.experiment not in leak_check.EXPERIMENTS or not folder.is_dir():
        return
    try:
        leak_check.check_folder(
            folder,
            args.experiment,
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
    from transformers import AutoTokenizer

    if args.prompt_tuning_fact is None and args.num_virtual_tokens is None:
        raise TrainError("num_virtual_tokens: required for prompt tuning without prompt_tuning_fact")
    text = fact_text(dataset) if args.prompt_tuning_fact is not None else None
    num_tokens = args.num_virtual_tokens or len(AutoTokenizer.from_pretrained(model_path)(text)["input_ids"])
    if text is None or args.prompt_tuning_init == "random":  # the control: as long as the fact's prompt, random start
        return PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM, prompt_tuning_init=PromptTuningInit.RANDOM, num_virtual_tokens=num_tokens
        )
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


def checkpoint_step(checkpoint: Path | None) -> int:
    """The global step a checkpoint was saved at (0: no checkpoint, a fresh start)."""
    return int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1)) if checkpoint else 0


def remove_checkpoints(output_dir: Path) -> None:
    """Checkpoints only serve resuming; a finished run keeps its final weights (a 7B checkpoint with Adam is ~80 GB)."""
    for path in output_dir.iterdir():
        if CHECKPOINT_PATTERN.match(path.name) and path.is_dir():
            shutil.rmtree(path)
    run_folder.run_start_path(output_dir).unlink(missing_ok=True)


def _lock_owner(path: Path) -> tuple[int, str] | None:
    """The pid and host a lock file names, or None while it is being written (or garbled)."""
    with contextlib.suppress(OSError, ValueError):
        pid, host = path.read_text().split()
        return int(pid), host
    return None


def _is_stale(path: Path) -> bool:
    """A lock of a process that is gone from this host; another host's pid cannot be checked from here."""
    owner = _lock_owner(path)
    if owner is None or owner[1] != socket.gethostname():
        return False
    try:
        os.kill(owner[0], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _create_lock(path: Path) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        file.write(f"{os.getpid()} {socket.gethostname()}")
    return True


@contextlib.contextmanager
def training_lock(output_dir: Path, *, holder: bool) -> Iterator[None]:
    """One job at a time trains into a folder: the main process (`holder`) holds `.train.lock` (pid and host) while
    it runs; a second job is refused, and the lock of a job killed on this host is taken over."""
    if not holder:
        yield
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / run_folder.TRAIN_LOCK
    if not _create_lock(path):
        if not _is_stale(path):
            raise TrainError(f"output_dir: {output_dir} is in use by the run in {path} (delete it if that run is gone)")
        logger.info("taking over %s: its process is gone", path)
        path.unlink(missing_ok=True)
        if not _create_lock(path):
            raise TrainError(f"output_dir: {output_dir} was just taken by another run ({path})")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def recipe_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key old -> new` for each setting that differs, except where a run logs, checkpoints and pushes."""
    keys = sorted(key for key in recorded.keys() | current.keys() if not key.startswith(RESUME_FREE_PREFIXES))
    return [
        f"{key} {recorded.get(key)!r} -> {current.get(key)!r}" for key in keys if recorded.get(key) != current.get(key)
    ]


def start_or_resume(output_dir: Path, checkpoint: Path | None, resolved_config: dict[str, Any], *, writer: bool) -> str:
    """The run id: a fresh one for a fresh run (which removes the folder's previous results and records its recipe,
    when `writer`), the checkpoint's run's when the recipe matches the one it was trained with, else a one-line error.

    A checkpoint without a recorded recipe (written before recipes were recorded) resumes with a warning.
    """
    started = run_folder.read_run_start(output_dir) if checkpoint is not None else None
    if started is not None:
        changes = recipe_changes(run_folder.resolved_config(started), resolved_config)
        if changes:
            raise TrainError(
                f"output_dir: {checkpoint} was trained with other settings ({'; '.join(changes)}): rerun with those to "
                f"resume it, or delete {output_dir}/checkpoint-* to start fresh"
            )
        return started[run_folder.RUN_ID]
    if checkpoint is not None:
        logger.warning("%s: no %s, so its recipe is not checked before resuming", checkpoint, run_folder.RUN_START)
    run_id = run_folder.new_run_id()
    if writer:
        if checkpoint is None:
            remove_previous_results(output_dir)
        run_folder.write_run_start(output_dir, run_id, resolved_config)
    return run_id


def remove_previous_results(output_dir: Path) -> None:
    """A fresh run replaces the folder's weights, so the previous run's `run_info.json`, scores and curves would
    describe weights that are gone: they go before it trains (a folder without `run_info.json` is unfinished)."""
    for path in (run_folder.run_info_path(output_dir), run_folder.curves_path(output_dir)):
        if path.is_file():
            logger.info("removing %s of the run this one replaces", path)
            path.unlink()
    if run_folder.eval_dir(output_dir).is_dir():
        logger.info("removing %s: scores of the weights this run replaces", run_folder.eval_dir(output_dir))
        shutil.rmtree(run_folder.eval_dir(output_dir))


def log_at_save_callback():
    """A `TrainerCallback` that logs the loss at every checkpoint, so a checkpoint's log history covers every step
    before it (what `whole_run_loss` adds up after a resume)."""
    from transformers import TrainerCallback

    class LogAtSave(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            control.should_log = control.should_log or control.should_save

        on_epoch_end = on_step_end

    return LogAtSave()


def whole_run_loss(log_history: list[dict[str, Any]], resumed_at: int, loss_since: float, final_step: int) -> float:
    """The mean training loss over every step of the run: the trainer's `training_loss` covers only the steps since
    it resumed (`resumed_at`); the steps before come from the log history the checkpoint carried, whose logged
    means are weighted by the steps each covers."""
    if resumed_at == 0 or final_step == 0:
        return loss_since
    logged = [
        (entry["step"], entry["loss"]) for entry in log_history if "loss" in entry and entry["step"] <= resumed_at
    ]
    if not logged:
        return loss_since
    steps = [step for step, _ in logged]
    covered = sum(loss * (step - previous) for (step, loss), previous in zip(logged, [0, *steps], strict=False))
    before = covered / steps[-1] * resumed_at  # all of it when the checkpoint's step was logged (`log_at_save`)
    return (before + loss_since * (final_step - resumed_at)) / final_step


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


def push_target(training_args) -> PushTarget | None:
    """Where a `push_to_hub` run goes, with everything the push needs checked (`hub.model_push_target`: token,
    reachable Hub, id, writable namespace, branch): the launcher and the job call it before training. None: no push."""
    if not training_args.push_to_hub:
        return None
    strategy = getattr(training_args.hub_strategy, "value", training_args.hub_strategy)
    if strategy not in FINAL_PUSH_STRATEGIES:
        raise TrainError(
            f"hub_strategy: {strategy!r} pushes checkpoints, which stay local here (resuming reads them); "
            "use end (the finished folder is pushed once, with its card)"
        )
    return model_push_target(
        training_args.hub_model_id,
        output_dir=training_args.output_dir,
        revision=training_args.hub_revision,
        private=training_args.hub_private_repo,
        token=training_args.hub_token,
    )


def run(recipe: Recipe, callbacks: list | None = None) -> Path:
    """Train (resuming if the output folder has a checkpoint of the same recipe), save, record `run_info.json`, push
    if asked; with the folder locked against a second job."""
    output_dir = Path(recipe.training_args.output_dir)
    try:
        run_folder.check_output_dir(output_dir)
    except run_folder.OutputDirError as error:
        raise TrainError(f"output_dir: {error}") from error
    _load_split(recipe, recipe.script_args.dataset_train_split)  # a bad build stops the job before it makes a folder
    is_main = recipe.training_args.process_index == 0
    target = push_target(recipe.training_args) if is_main else None  # before the hours of training, not after
    with training_lock(output_dir, holder=is_main):
        return _train(recipe, output_dir, callbacks, target)


def sft_trainer(recipe: Recipe, model_path: str, tokenizer, dataset, callbacks: list):
    """TRL's `SFTTrainer` for the causal modes (full, prompt tuning, LoRA), with the recipe's learning curves; packed
    documents are checked to stay apart before it trains."""
    from trl import SFTTrainer

    collator = padding_free_collator(tokenizer) if recipe.script_args.isolated_padding_free else None
    trainer = SFTTrainer(
        model=model_path,
        args=recipe.training_args,
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
    return trainer


def push_finished_run(output_dir: Path, target: PushTarget, token: str | None) -> None:
    """Push the saved run; a failure says how to push the finished folder again."""
    from reversal_hf.model_card import push_run

    try:
        commit = push_run(output_dir, target, token=token)
    except HubError as error:
        again = f"reversal-hf push-model {output_dir} --repo-id {target.repo_id} --revision {target.revision}"
        raise HubError(f"{error} (the run is saved: push it with `{again}`)") from error
    logger.info("pushed %s to %s: commit %s", output_dir, target, commit)


def _train(recipe: Recipe, output_dir: Path, callbacks: list | None, target: PushTarget | None) -> Path:
    from transformers import AutoTokenizer

    training_args = recipe.training_args
    model_path = resolve_model_path(recipe.model_args.model_name_or_path)
    configure_batching(recipe)
    resolved_config = recipe.resolved_config()
    hub_token, training_args.hub_token = training_args.hub_token, None  # else pickled into training_args.bin
    is_main = training_args.process_index == 0
    checkpoint = last_complete_checkpoint(output_dir)
    run_id = start_or_resume(output_dir, checkpoint, resolved_config, writer=is_main)
    training_args.push_to_hub = False  # pushed once, with our model card, after the final save (`target`)
    training_args.model_init_kwargs = {
        "dtype": recipe.model_args.dtype,
        "revision": recipe.model_args.model_revision,
        "attn_implementation": recipe.model_args.attn_implementation,
        **(training_args.model_init_kwargs or {}),
    }
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=recipe.model_args.model_revision)
    dataset = load_train_dataset(recipe, tokenizer)
    trained_dataset = dataset_info(recipe)  # the build just loaded and checked, not whatever is there hours later
    if recipe.script_args.reversal_transform is not None:
        check_reversed_leaks(recipe)
    check_document_lengths(recipe, dataset, tokenizer)
    if recipe.precision is not None:
        logger.info("precision %s: %s", recipe.precision.as_dict()["dtype"], recipe.precision.reason)
    callbacks = [*(callbacks or []), log_at_save_callback()]
    if recipe.script_args.training_mode == "mlm_u":
        from reversal_hf.mlm_u import mlm_u_trainer

        trainer = mlm_u_trainer(recipe, model_path, tokenizer, dataset, callbacks)
    else:
        trainer = sft_trainer(recipe, model_path, tokenizer, dataset, callbacks)
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
            run_folder.RUN_ID: run_id,
            "experiment": recipe.script_args.experiment,
            "training_mode": recipe.script_args.training_mode,
            "model_name_or_path": model_path,
            "dataset": trained_dataset,
            "seed": training_args.seed,
            "git_commit": commit,
            "resolved_config": resolved_config,
            "train_runtime_s": round(runtime, 3),
            "train_loss": whole_run_loss(
                trainer.state.log_history, checkpoint_step(checkpoint), result.training_loss, result.global_step
            ),
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
        if target is not None:
            push_finished_run(output_dir, target, hub_token)
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
    returncode = 1
    try:
        recipe_argv = sys.argv[1:] if argv is None else argv
        returncode = run_command(
            lambda: run(parse_recipe(recipe_argv)), (RecipeError, TrainError, EvaluationError, HubError), done=None
        )
    finally:
        end_distributed(synchronize=returncode == 0)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
