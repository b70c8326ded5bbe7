"""Training throughput: TRL's default SFT settings against our recipe's settings, in one run on the same data.

Both runs train the same model (fresh from the same weights) with the real `SFTTrainer` on the Experiment 1
documents in the same order; only the speed settings differ:

- `trl_default`: `SFTConfig` defaults (padded batches, activation checkpointing on, `max_length=1024`);
- `ours`: padding-free rows of at most 256 tokens from `PaddingFreeCollator` (checked once with
  `assert_document_isolation`), no activation checkpointing; on CUDA also fused AdamW and
  `torch.compile(mode="reduce-overhead")` with the rows padded to multiples of 64 tokens, so that only a few static
  shapes are captured as CUDA graphs.

Precision is the same in both (bf16 mixed on CUDA, float32 on CPU) so that the ratio measures batching and
checkpointing, not dtype. Tokens/s counts the documents' tokens (no padding) over `--steps` timed steps that follow
`--warmup-steps` untimed ones. The first logged loss of both runs is printed too: the same batch, packed or padded,
must give the same loss.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
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
from reversal_hf.models import ModelPrepareError, resolve_model

SETTINGS = ("trl_default", "ours")
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


def speed_settings(setting: str, on_cuda: bool) -> dict[str, Any]:
    """The `SFTConfig` fields that differ between TRL's defaults and our recipe."""
    if setting == "trl_default":
        return {}
    return {
        "activation_checkpointing": False,
        "padding_free": False,  # the custom collator packs; TRL refuses one together with padding_free=True
        "max_length": None,  # the documents are one sentence each
        "optim": "adamw_torch_fused" if on_cuda else "adamw_torch",
        "torch_compile": on_cuda,
        **({"torch_compile_mode": "reduce-overhead"} if on_cuda else {}),
    }


def run_setting(
    setting: str, model_path: str, dataset, *, steps: int, warmup_steps: int, batch_size: int, output_dir: str
) -> dict[str, Any]:
    """Train `warmup_steps + steps` steps with one setting and measure the timed steps' tokens/s."""
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    on_cuda = torch.cuda.is_available()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    args = SFTConfig(
        output_dir=output_dir,
        max_steps=warmup_steps + steps,
        per_device_train_batch_size=batch_size,
        bf16=on_cuda,
        use_cpu=not on_cuda,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        **speed_settings(setting, on_cuda),
    )
    if setting == "ours":
        inner = PaddingFreeCollator(
            tokenizer.pad_token_id, max_row_tokens=ROW_TOKENS, pad_to_multiple_of=CUDA_BUCKET if on_cuda else None
        )
    else:  # what SFTTrainer builds when given no collator, made explicit so that its tokens can be counted
        inner = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    collator = CountingCollator(inner)
    timer = StepTimer(warmup_steps)
    trainer = SFTTrainer(
        model, args=args, train_dataset=dataset, processing_class=tokenizer, data_collator=collator, callbacks=[timer]
    )
    if setting == "ours":
        assert_document_isolation(trainer.model, inner, [trainer.train_dataset[i] for i in range(8)])
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
        "settings": {key: str(value) for key, value in speed_settings(setting, on_cuda).items()},
    }


def load_documents(dataset_dir: Path):
    """The Experiment 1 training documents (`all/train`) as a prompt-completion dataset."""
    from datasets import load_dataset

    if not (dataset_dir / "data").is_dir():
        raise FileNotFoundError(f"dataset folder {dataset_dir} not found: run `make data` first")
    return load_dataset(str(dataset_dir), "all", split="train").select_columns(["prompt", "completion"])


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
        json.dump(payload, handle, indent=2)
    os.replace(handle.name, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-exp1", help="registered name (see `reversal-hf models list`) or path")
    parser.add_argument("--dataset", type=Path, default=paths.DATASETS_DIR / "reversal-exp1")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per setting")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--batch-size", type=int, default=64, help="documents per step")
    parser.add_argument("--output-json", type=Path, help="write the measurements here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup_steps < 1 or args.batch_size < 1:
        parser.error("--steps, --warmup-steps and --batch-size must be positive")
    try:
        dataset = load_documents(args.dataset)
        model_path = resolve_model(args.model)
    except (FileNotFoundError, ModelPrepareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    results = {}
    with tempfile.TemporaryDirectory() as output_dir:
        for setting in SETTINGS:
            results[setting] = run_setting(
                setting,
                model_path,
                dataset,
                steps=args.steps,
                warmup_steps=args.warmup_steps,
                batch_size=args.batch_size,
                output_dir=output_dir,
            )
            result = results[setting]
            print(
                f"{setting:>12}: {result['tokens_per_s']:>9,.1f} tokens/s, {result['tokens_per_cpu_s']:,.1f} per CPU s",
                flush=True,
            )
    speedup = results["ours"]["tokens_per_s"] / results["trl_default"]["tokens_per_s"]
    cpu_speedup = results["ours"]["tokens_per_cpu_s"] / results["trl_default"]["tokens_per_cpu_s"]
    losses = f"{results['trl_default']['first_loss']:.4f} padded, {results['ours']['first_loss']:.4f} padding-free"
    print(f"     speedup: {speedup:.2f}x wall, {cpu_speedup:.2f}x CPU time (first loss {losses})")
    payload = {
        "model": args.model,
        "device": device,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "batch_size": args.batch_size,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "trl": trl.__version__},
        "results": results,
        "speedup": round(speedup, 3),
        "cpu_time_speedup": round(cpu_speedup, 3),
    }
    if args.output_json:
        write_json(args.output_json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
