"""Training throughput: TRL's default SFT settings, TRL's padding-free batching and our collator, in one run.

Every arm trains the same model (fresh from the same weights) with the real `SFTTrainer` on the same documents
(by default Experiment 1's `all/train`) in the same order; only the speed settings differ:

- `trl_default`: `SFTConfig` defaults (padded batches, activation checkpointing on, `max_length=1024`);
- `trl_padding_free`: our recipes' speed settings (no activation checkpointing, `max_length=None`; on CUDA fused
  AdamW and `torch.compile`) with TRL's `padding_free=True`: the whole batch in one row;
- `ours`: the same settings with `PaddingFreeCollator`: rows of at most 256 tokens.

Both padding-free arms are checked once with `assert_document_isolation` before timing. On CUDA both pad their rows
to multiples of 64 tokens, so that only a few shapes are compiled. No CUDA graphs (`mode="reduce-overhead"`): TRL
1.16's fused LM head scores only the label positions (`hidden_states[mask]`, `masked_scatter`), which graph capture
refuses ("operation not permitted when stream is capturing", H200, 2026-11-26). Precision is the same in
every arm (bf16 mixed on CUDA or with `--bf16`, else float32), so the ratios measure batching and checkpointing.
Tokens/s counts the documents' tokens (no padding) over `--steps` timed steps that follow `--warmup-steps` untimed
ones. The arms run interleaved (ABCABC...) `--repeats` times and the medians are reported with their spread (min-max
over the repeats; for a ratio, of the ratios within each repeat), since a shared machine's load drifts. The first
logged loss of every arm is printed too: the same batch, packed or padded, gives the same loss.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from reversal_hf import paths
from reversal_hf.collators import PaddingFreeCollator, assert_document_isolation
from reversal_hf.files import write_json
from reversal_hf.models import ModelPrepareError, resolve_model

ARMS = ("trl_default", "trl_padding_free", "ours")
COMPARED = [("trl_padding_free", "trl_default"), ("ours", "trl_default"), ("ours", "trl_padding_free")]
ROW_TOKENS = 256
CUDA_BUCKET = 64


@dataclass
class CountingCollator:
    """Wraps a collator and records the document tokens (padding excluded) of every batch it builds, in order."""

    inner: Any
    tokens_per_batch: list[int] = field(default_factory=list)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        self.tokens_per_batch.append(sum(len(example["input_ids"]) for example in examples))
        return self.inner(examples)


class StepTimer(TrainerCallback):
    """Times the optimizer steps after the warm-up ones (synchronizing CUDA so that queued kernels count).

    Process CPU time is kept beside wall time: on a shared CPU machine it is the steadier measure of the work done.
    """

    def __init__(self, warmup_steps: int) -> None:
        self.warmup_steps = warmup_steps
        self.start = self.end = (0.0, 0.0)

    def on_step_end(self, args, state, control, **kwargs) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = (time.perf_counter(), time.process_time())
        if state.global_step == self.warmup_steps:
            self.start = now
        self.end = now


def speed_settings(arm: str, on_cuda: bool) -> dict[str, Any]:
    """The `SFTConfig` fields that differ from TRL's defaults in this arm."""
    if arm == "trl_default":
        return {}
    return {
        "activation_checkpointing": False,
        "padding_free": arm == "trl_padding_free",  # TRL refuses a custom collator together with padding_free=True
        "max_length": None,  # the documents are one sentence each; TRL's padding-free path requires None
        "optim": "adamw_torch_fused" if on_cuda else "adamw_torch",
        "torch_compile": on_cuda,
        **({"pad_to_multiple_of": CUDA_BUCKET} if on_cuda else {}),
    }


def run_arm(
    arm: str, model_path: str, dataset, *, steps: int, warmup_steps: int, batch_size: int, bf16: bool, output_dir: str
) -> dict[str, Any]:
    """Train `warmup_steps + steps` steps with one arm's settings and measure the timed steps' tokens/s."""
    from trl import SFTConfig, SFTTrainer

    on_cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=output_dir,
        max_steps=warmup_steps + steps,
        per_device_train_batch_size=batch_size,
        bf16=bf16,
        use_cpu=not on_cuda,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        **speed_settings(arm, on_cuda),
    )
    ours = None
    if arm == "ours":
        ours = PaddingFreeCollator(
            tokenizer.pad_token_id, max_row_tokens=ROW_TOKENS, pad_to_multiple_of=CUDA_BUCKET if on_cuda else None
        )
    timer = StepTimer(warmup_steps)
    trainer = SFTTrainer(
        model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=ours, callbacks=[timer]
    )
    if arm != "trl_default":
        assert_document_isolation(trainer.model, trainer.data_collator, [trainer.train_dataset[i] for i in range(8)])
    collator = trainer.data_collator = CountingCollator(trainer.data_collator)
    trainer.train()
    tokens = sum(collator.tokens_per_batch[warmup_steps : warmup_steps + steps])
    seconds, cpu_seconds = (end - start for end, start in zip(timer.end, timer.start, strict=True))
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {
        "tokens": tokens,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "cpu_seconds": round(cpu_seconds, 3),
        "tokens_per_cpu_s": round(tokens / cpu_seconds, 1),
        "first_loss": losses[0],
    }


def summarize(arm: str, repeats: list[dict[str, Any]], on_cuda: bool) -> dict[str, Any]:
    """Medians over an arm's repeats with their spread (min-max), beside every repeat's numbers."""
    summary: dict[str, Any] = {}
    for key in ("tokens_per_s", "tokens_per_cpu_s"):
        values = [run[key] for run in repeats]
        summary[key] = round(statistics.median(values), 1)
        summary[f"{key}_range"] = [round(min(values), 1), round(max(values), 1)]
    return summary | {
        "first_loss": repeats[0]["first_loss"],
        "settings": {key: str(value) for key, value in speed_settings(arm, on_cuda).items()},
        "repeats": repeats,
    }


def compare(faster: dict[str, Any], slower: dict[str, Any]) -> dict[str, Any]:
    """Ratio of the medians, and the min-max of the ratios within each interleaved repeat."""
    ratios: dict[str, Any] = {}
    for name, key in (("wall", "tokens_per_s"), ("cpu_time", "tokens_per_cpu_s")):
        per_repeat = [a[key] / b[key] for a, b in zip(faster["repeats"], slower["repeats"], strict=True)]
        ratios[name] = round(faster[key] / slower[key], 3)
        ratios[f"{name}_range"] = [round(min(per_repeat), 3), round(max(per_repeat), 3)]
    return ratios


def load_documents(dataset_dir: Path, config: str):
    """A built dataset's training documents (`<config>/train`) as a prompt-completion dataset."""
    from datasets import load_dataset

    if not (dataset_dir / "data").is_dir():
        raise FileNotFoundError(f"dataset folder {dataset_dir} not found: run `make data` first")
    return load_dataset(str(dataset_dir), config, split="train").select_columns(["prompt", "completion"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-exp1", help="registered name (see `reversal-hf models list`) or path")
    parser.add_argument("--dataset", type=Path, default=paths.DATASETS_DIR / "reversal-exp1")
    parser.add_argument("--config", default="all", help="dataset config whose `train` split is trained on")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per arm and repeat")
    parser.add_argument("--warmup-steps", type=int, default=3, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per step")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the arms; median and min-max")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="which arms to run")
    parser.add_argument("--bf16", action="store_true", help="bf16 mixed precision on CPU too (always on CUDA)")
    parser.add_argument("--output-json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    if min(args.steps, args.warmup_steps, args.batch_size, args.repeats) < 1:
        parser.error("--steps, --warmup-steps, --batch-size and --repeats must be positive")
    try:
        dataset = load_documents(args.dataset, args.config)
        model_path = resolve_model(args.model)
    except (FileNotFoundError, ModelPrepareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    on_cuda = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if on_cuda else f"CPU ({os.cpu_count()} cores)"
    runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in args.arms}
    with tempfile.TemporaryDirectory() as output_dir:
        for repeat in range(args.repeats):
            for arm in args.arms:
                result = run_arm(
                    arm,
                    model_path,
                    dataset,
                    steps=args.steps,
                    warmup_steps=args.warmup_steps,
                    batch_size=args.batch_size,
                    bf16=on_cuda or args.bf16,
                    output_dir=output_dir,
                )
                runs[arm].append(result)
                print(
                    f"[{repeat + 1}/{args.repeats}] {arm:>16}: {result['tokens_per_s']:>9,.1f} tokens/s, "
                    f"{result['tokens_per_cpu_s']:,.1f} per CPU s, first loss {result['first_loss']:.4f}",
                    flush=True,
                )
    results = {arm: summarize(arm, repeats, on_cuda) for arm, repeats in runs.items()}
    ratios = {
        f"{faster}/{slower}": compare(results[faster], results[slower])
        for faster, slower in COMPARED
        if faster in results and slower in results
    }
    for arm, result in results.items():
        (low, high), (cpu_low, cpu_high) = result["tokens_per_s_range"], result["tokens_per_cpu_s_range"]
        speed = (
            f"{result['tokens_per_s']:>9,.1f} tokens/s (min-max {low:,.1f}-{high:,.1f}), "
            f"{result['tokens_per_cpu_s']:,.1f} per CPU s ({cpu_low:,.1f}-{cpu_high:,.1f})"
        )
        print(f"median {arm:>16}: {speed}")
    for name, ratio in ratios.items():
        (low, high), (cpu_low, cpu_high) = ratio["wall_range"], ratio["cpu_time_range"]
        print(
            f"{name:>30}: {ratio['wall']:.2f}x wall (per repeat {low:.2f}-{high:.2f}x), "
            f"{ratio['cpu_time']:.2f}x CPU time ({cpu_low:.2f}-{cpu_high:.2f}x)"
        )
    payload = {
        "model": args.model,
        "dataset": f"{args.dataset.name}/{args.config}",
        "device": device,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "bf16": on_cuda or args.bf16,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "trl": trl.__version__},
        "results": results,
        "ratios": ratios,
    }
    if args.output_json:
        write_json(args.output_json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
