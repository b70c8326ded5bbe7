"""Learning curves (the paper's Figures 9 and 11): held-out metrics measured while a run trains.

`EvalCurvesCallback`, registered by `train.run` when a recipe sets `eval_curves`, measures a point at the end of every
epoch (or every N optimizer steps) with the evaluators' batched building blocks: for Exp 1 exact match on the p2d and
d2p `test` and `reverse_test` splits, plus the Appendix B.8 losses for prompt tuning; for Exp 3 exact match on the
held-out pairs of the run's config, and with `eval_curves_realized` on its realized training pairs, where
`eval_curves_stop_at_realized` stops training once they are learned (the paper's Exp 3 rule). A point goes into the
trainer's log history through `Trainer.log` (so `report_to` gets it: TensorBoard shows `eval/curves/...`) and into
`<output_dir>/curves.json`, which is rebuilt from the log history each time: a resumed run keeps exactly the points of
the checkpoint it resumed from.

Every rank measures every point on the same rows: under DeepSpeed ZeRO-3 each forward pass gathers the parameters
from all ranks, so all ranks must run the same passes (as the Trainer's own evaluation does; `generate` syncs them
when ZeRO-3 is on). Only the main process writes curves.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
from transformers import Trainer, TrainerCallback

from reversal_hf import run_folder
from reversal_hf.evaluation.backends import BatchedRunner, Runner, generate_and_match
from reversal_hf.evaluation.exp1 import Exp1Data, Exp1Options, evaluate_prompt_tuning, prompt_tuning_fact
from reversal_hf.evaluation.exp3 import held_out_sets, realized_sets

if TYPE_CHECKING:
    from reversal_hf.configs import ScriptArguments

EXP1_SPLITS = ("p2d/test", "p2d/reverse_test", "d2p/test", "d2p/reverse_test")
# `eval_` makes the report_to integrations file the values under `eval/` (transformers' `rewrite_logs`).
LOG_PREFIX = "eval_curves/"


@dataclass(frozen=True)
class HeldOutSets:
    """What each curve point measures: exact match on `sets`, and for a prompt-tuning run the B.8 losses of
    `tuned_fact` (computed from `exp1_data`, as `reversal-hf eval` does)."""

    sets: dict[str, pd.DataFrame]
    exp1_data: Exp1Data | None = None
    tuned_fact: str | None = None

    @classmethod
    def for_run(cls, args: ScriptArguments) -> HeldOutSets:
        """The held-out rows of a recipe's experiment, from the dataset (and revision) it trains on."""
        dataset = run_folder.resolve_local(args.dataset_name)
        limit = args.eval_curves_max_examples
        if args.experiment == "exp3":
            sets = held_out_sets(dataset, args.dataset_revision, [args.dataset_config], limit)
            if args.eval_curves_realized:
                sets |= realized_sets(dataset, args.dataset_revision, [args.dataset_config], limit)
            return cls(sets)
        data = Exp1Data.load(dataset, args.dataset_revision, limit, EXP1_SPLITS)
        if args.training_mode != "prompt_tuning":
            return cls(data.splits)
        fact = prompt_tuning_fact(args.prompt_tuning_fact, data)[0]
        return cls(data.tuned_fact_sets(fact, EXP1_SPLITS, limit), data, fact)

    def describe(self) -> dict[str, Any]:
        """The rows behind every point: exact-match rows per split, and the tuned fact with its prompt counts."""
        description: dict[str, Any] = {"n": {key: len(frame) for key, frame in self.sets.items()}}
        if self.tuned_fact is not None:
            description["prompt_tuning_fact"] = self.tuned_fact
        return description

    def measure(self, runner: Runner) -> dict[str, dict[str, float]]:
        """One point: `{"exact_match": {split: accuracy}}`, plus `"prompt_tuning": {loss name: loss}`."""
        exact_match, _ = generate_and_match(self.sets, runner)
        point = {"exact_match": {key: metric["accuracy"] for key, metric in exact_match.items()}}
        if self.exp1_data is not None and self.tuned_fact is not None:
            losses = evaluate_prompt_tuning(self.exp1_data, runner, self.tuned_fact, Exp1Options().seed)
            point["prompt_tuning"] = {name: value for name, value in losses.items() if name.endswith("_loss")}
        return point


def log_entry(point: dict[str, Any]) -> dict[str, float]:
    """A point as flat `eval_curves/<block>/<name>` keys, the shape `Trainer.log` and its integrations take."""
    entry = {}
    for block, values in point.items():
        if isinstance(values, dict):
            entry.update({f"{LOG_PREFIX}{block}/{name}": value for name, value in values.items()})
        else:
            entry[f"{LOG_PREFIX}{block}"] = values
    return entry


def points_from_log_history(log_history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The curve points of a trainer's log history, nested back into blocks, with their step and epoch."""
    points = []
    for entry in log_history:
        values = {key.removeprefix(LOG_PREFIX): value for key, value in entry.items() if key.startswith(LOG_PREFIX)}
        if not values:
            continue
        point: dict[str, Any] = {"step": entry.get("step"), "epoch": entry.get("epoch")}
        for name, value in values.items():
            block, _, key = name.partition("/")
            if key:
                point.setdefault(block, {})[key] = value
            else:
                point[block] = value
        points.append(point)
    return points


class EvalCurvesCallback(TrainerCallback):
    """Measures `held_out` every epoch (`every="epoch"`) or every N steps and at the last one; see the module."""

    def __init__(
        self,
        trainer: Any,
        held_out: HeldOutSets,
        every: str,
        header: dict[str, Any],
        stop_at: tuple[str, float] | None = None,
    ):
        self.trainer = trainer  # for Trainer.log, which feeds the log history and every report_to integration
        self.held_out = held_out
        self.every_steps = None if every == "epoch" else int(every)
        self.stop_at = stop_at  # (exact-match split, accuracy): training stops once a point reaches it
        stop = {"stop_at": {"split": stop_at[0], "accuracy": stop_at[1]}} if stop_at else {}
        self.header = {**header, "every": every, **stop, **held_out.describe()}

    def on_train_begin(self, args, state, control, **kwargs):
        self._write(args, state)  # a resumed run's file holds the points of its checkpoint only

    def on_step_end(self, args, state, control, **kwargs):
        if self.every_steps and (state.global_step % self.every_steps == 0 or state.global_step == state.max_steps):
            self._measure(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.every_steps is None:
            self._measure(args, state, control)

    def _measure(self, args, state, control) -> None:
        model = self.trainer.model
        was_training = model.training
        model.eval()
        started = time.monotonic()
        try:
            runner = BatchedRunner(model, self.trainer.processing_class, args.per_device_eval_batch_size)
            point = self.held_out.measure(runner)
        finally:
            model.train(was_training)
        # The base Trainer.log: SFTTrainer.log would fold the training metrics it is averaging into this entry. Logging
        # clears `should_log`, which this step's own training log (right after on_step_end) still needs.
        point["runtime_s"] = round(time.monotonic() - started, 3)
        if self.stop_at and point["exact_match"][self.stop_at[0]] >= self.stop_at[1]:
            control.should_training_stop = True
            point["stopped_training"] = 1.0
            print(
                f"[curves] step {state.global_step}: exact match on {self.stop_at[0]} "
                f"{point['exact_match'][self.stop_at[0]]:.3f} >= {self.stop_at[1]}: training stops",
                flush=True,
            )
        should_log = control.should_log
        Trainer.log(self.trainer, log_entry(point))
        control.should_log = should_log
        self._write(args, state)

    def _write(self, args, state) -> None:
        if state.is_world_process_zero:
            curves = {**self.header, "points": points_from_log_history(state.log_history)}
            run_folder.write_curves(args.output_dir, curves)


def eval_curves_callback(trainer: Any, args: ScriptArguments) -> EvalCurvesCallback:
    """The callback for a recipe with `eval_curves`; its held-out rows are loaded now, before training starts."""
    header = {
        "experiment": args.experiment,
        "training_mode": args.training_mode,
        "dataset": {"name": args.dataset_name, "config": args.dataset_config, "revision": args.dataset_revision},
        "max_examples": args.eval_curves_max_examples,
    }
    stop_at = None
    if args.eval_curves_stop_at_realized is not None:
        stop_at = (f"{args.dataset_config}/realized", args.eval_curves_stop_at_realized)
    return EvalCurvesCallback(trainer, HeldOutSets.for_run(args), args.eval_curves_every, header, stop_at)
