"""The GPU readiness check (`make gpu-check`): one short run that proves the CUDA path, and its CPU twin for CI.

Four parts, each on random-init Llamas (no weights to fetch), each recorded even when another fails:

1. `paper_batch`: a SmolLM2-135M-shaped Llama, batch 16 of the Exp 1 documents (~32 tokens): TRL's `SFTTrainer`
   defaults against our recipe path (`bench_train.run_setting`: padding-free rows, fused AdamW, `torch.compile`),
   steady-state tokens/s. Target: ours >= 8x TRL's.
2. `packed`: a Llama-3.2-1B-shaped model on packed 2,048-token rows of random documents, isolated through packed
   `position_ids` (checked with `assert_document_isolation` first): tokens/s and MFU against the card's bf16 dense
   peak, eager and `torch.compile`d. Target: >= 45% MFU.
3. `launcher`: `reversal-hf train` on one GPU and under DeepSpeed ZeRO-3 (one process) for a few steps from the same
   init, saved, reloaded in a fresh process: the two trained models' logits must agree better than either agrees
   with the init.
4. `evaluation`: the batched Exp 1 evaluator against the per-example loop (`bench_eval.run`). Target: >= 20x.

`--tiny` runs the same four parts with tiny shapes and a few steps on CPU (tests/test_gpu_check.py), so the check
cannot rot between the rare runs on a GPU. Writes `<out>/<card>-<date>.json` and `.md`; exits 1 when a part failed.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from bench import _common, bench_eval, bench_train
from reversal_hf import paths
from reversal_hf.collators import DocumentIsolationError, PaddingFreeCollator, assert_document_isolation
from reversal_hf.files import write_json, write_text
from reversal_hf.models import dataset_texts, save_random_llama, train_tokenizer

SMOLLM2_135M = {
    "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "vocab_size": 49152, "rope_theta": 100000.0, "tie_word_embeddings": True,
}  # fmt: skip
LLAMA_1B = {
    "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "rope_theta": 500000.0, "tie_word_embeddings": True,
}  # fmt: skip
TINY = {
    "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 2, "num_attention_heads": 2,
    "num_key_value_heads": 2, "vocab_size": 4096, "tie_word_embeddings": True,
}  # fmt: skip
# bf16 dense tensor-core peaks (no sparsity), matched against the device name in this order.
BF16_PEAK_TFLOPS = (("H200", 989.4), ("H100 PCIe", 756.0), ("H100", 989.4), ("A100", 312.0))
RELOAD_PROMPT = "Daphne Barrington, known far and wide for being the acclaimed director of"


class CheckFailed(RuntimeError):
    """A part ran but what it checks does not hold (isolation, reload)."""


@dataclass(frozen=True)
class Plan:
    """Shapes and step counts of one mode: the GPU run (<= 8 minutes on an H100) or its tiny CPU twin."""

    paper_shape: dict
    paper_batch: int
    paper_warmup: int
    paper_steps: int
    packed_shape: dict
    packed_rows: int
    packed_row_tokens: int
    packed_warmup: int
    packed_steps: int
    launcher_recipe: str
    launcher_configs: tuple[str, str]
    launcher_overrides: tuple[str, ...]
    launcher_steps: int
    eval_examples_per_split: int


GPU_PLAN = Plan(
    paper_shape=SMOLLM2_135M, paper_batch=16, paper_warmup=20, paper_steps=50,
    packed_shape=LLAMA_1B, packed_rows=4, packed_row_tokens=2048, packed_warmup=5, packed_steps=20,
    launcher_recipe="exp1_smollm2_135m", launcher_configs=("single_gpu", "zero3"),
    launcher_overrides=("--use_cpu", "false"), launcher_steps=5,
    eval_examples_per_split=20,
)  # fmt: skip
TINY_PLAN = Plan(
    paper_shape=TINY, paper_batch=16, paper_warmup=1, paper_steps=3,
    packed_shape=TINY, packed_rows=2, packed_row_tokens=256, packed_warmup=1, packed_steps=2,
    launcher_recipe="exp1_tiny", launcher_configs=("cpu", "zero3_cpu"),
    launcher_overrides=(), launcher_steps=2,
    eval_examples_per_split=3,
)  # fmt: skip
PARTS = ("paper_batch", "packed", "launcher", "evaluation")
TARGETS = {"paper_batch": 8.0, "packed": 0.45, "evaluation": 20.0}


def build_random_model(shape: dict, texts: list[str], output_dir: Path, seed: int = 0) -> Path:
    """A random-init Llama of `shape` with a BPE tokenizer trained on `texts` (the vocabulary keeps `shape`'s size)."""
    tokenizer = train_tokenizer(texts)
    vocab_size = max(shape["vocab_size"], len(tokenizer))
    return save_random_llama(
        tokenizer, {**shape, "vocab_size": vocab_size, "max_position_embeddings": 4096}, output_dir, seed
    )


def paper_batch(plan: Plan, model_dir: Path, dataset_dir: Path, work: Path) -> dict[str, Any]:
    """TRL's defaults against our recipe path at the paper's batch, in this run, with `bench_train`'s code.

    Each arm's failure is recorded beside the others' numbers (the first H200 run lost TRL's default arm's numbers
    to the padding-free arm's error).
    """
    dataset = bench_train.load_documents(dataset_dir, "all")
    results = {}
    for arm in bench_train.ARMS:
        results[arm] = run_part(
            arm,
            lambda arm=arm: bench_train.run_arm(
                arm,
                str(model_dir),
                dataset,
                steps=plan.paper_steps,
                warmup_steps=plan.paper_warmup,
                batch_size=plan.paper_batch,
                bf16=torch.cuda.is_available(),
                output_dir=str(work / f"paper_{arm}"),
            ),
        )
    result: dict[str, Any] = {"results": results}
    failed = [f"{arm}: {results[arm]['error']}" for arm in bench_train.ARMS if "error" in results[arm]]
    if failed:
        result["error"] = "; ".join(failed)
    # Our recipe path is the faster of our two padding-free arms (the SmolLM2 recipes use TRL's on CPU).
    measured = [arm for arm in ("ours", "trl_padding_free") if "tokens_per_s" in results[arm]]
    if measured and "tokens_per_s" in results["trl_default"]:
        best = max(measured, key=lambda arm: results[arm]["tokens_per_s"])
        speedup = round(results[best]["tokens_per_s"] / results["trl_default"]["tokens_per_s"], 2)
        result |= {"best_arm": best, "speedup": speedup, "value": speedup}
    return result


def packed_documents(rows: int, row_tokens: int, vocab_size: int, seed: int = 0) -> list[dict[str, list[int]]]:
    """Random documents of 16-512 tokens that fill `rows` rows of exactly `row_tokens` tokens (no padding)."""
    generator = torch.Generator().manual_seed(seed)
    documents = []
    for _ in range(rows):
        left = row_tokens
        while left:
            length = min(left, int(torch.randint(16, 513, (1,), generator=generator)))
            left -= length
            documents.append({"input_ids": torch.randint(5, vocab_size, (length,), generator=generator).tolist()})
    return documents


def training_flops(parameters: int, config, document_lengths: list[int]) -> float:
    """Forward + backward FLOPs of one step: 6 per parameter and token, plus causal attention within each document."""
    attention = 6 * config.num_hidden_layers * config.hidden_size * sum(length**2 for length in document_lengths)
    return 6 * parameters * sum(document_lengths) + attention


def bf16_peak_flops(device_name: str) -> float | None:
    for marker, tflops in BF16_PEAK_TFLOPS:
        if marker in device_name:
            return tflops * 1e12
    return None


def packed(plan: Plan, device: torch.device, peak_flops: float | None) -> dict[str, Any]:
    """Tokens/s and MFU of isolated packed rows, eager then compiled (fp32 weights, bf16 autocast, fused AdamW)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**plan.packed_shape, max_position_embeddings=4096, pad_token_id=0)
    torch.manual_seed(0)
    with device:  # initialized where it trains: a 1B model's init on CPU would take a good part of the budget
        model = LlamaForCausalLM(config)
    collator = PaddingFreeCollator(pad_token_id=0, max_row_tokens=plan.packed_row_tokens)
    documents = packed_documents(plan.packed_rows, plan.packed_row_tokens, config.vocab_size)
    try:  # in float32, without autocast: the mask is what is checked, and its tolerance is float32's
        isolation = {"isolation_max_logit_difference": assert_document_isolation(model, collator, documents[:8])}
    except DocumentIsolationError as error:  # still measured, so that a rare GPU run yields its numbers
        isolation = {"error": f"DocumentIsolationError: {error}"}
    batch = {key: value.to(device) for key, value in collator(documents).items()}
    if batch["input_ids"].shape != (plan.packed_rows, plan.packed_row_tokens):
        raise CheckFailed(f"packed batch has shape {tuple(batch['input_ids'].shape)}")
    flops = training_flops(sum(p.numel() for p in model.parameters()), config, [len(d["input_ids"]) for d in documents])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step(forward: Callable) -> None:
        with autocast:
            loss = forward(**batch, use_cache=False).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    result: dict[str, Any] = {
        "shape": plan.packed_shape,
        "rows": plan.packed_rows,
        "row_tokens": plan.packed_row_tokens,
        "documents": len(documents),
        **isolation,
        "flops_per_step": flops,
        "peak_flops": peak_flops,
    }
    arms = {"eager": model}
    if device.type == "cuda":
        arms["compiled"] = torch.compile(model)
    for name, forward in arms.items():
        for _ in range(plan.packed_warmup):
            step(forward)
        _, seconds = _common.timed(lambda forward=forward: [step(forward) for _ in range(plan.packed_steps)])
        seconds_per_step = seconds / plan.packed_steps
        mfu = flops / seconds_per_step / peak_flops if peak_flops else None
        tokens_per_s = plan.packed_rows * plan.packed_row_tokens / seconds_per_step
        result[name] = {"tokens_per_s": round(tokens_per_s, 1), "mfu": round(mfu, 4) if mfu is not None else None}
        print(f"      packed {name}: {tokens_per_s:,.0f} tokens/s, MFU {mfu}", flush=True)
    best = [arm["mfu"] for name, arm in result.items() if name in arms and arm["mfu"] is not None]
    result["value"] = max(best) if best else None
    return result


def launch_train(plan: Plan, accelerate_config: str, model_dir: Path, dataset_dir: Path, output_dir: Path) -> None:
    """`reversal-hf train <recipe>` as a user runs it, with a few steps and the given accelerate config."""
    overrides = [
        *("--accelerate_config", accelerate_config, "--num_processes", "1", "--output_dir", str(output_dir)),
        *("--model_name_or_path", str(model_dir), "--dataset_name", str(dataset_dir)),
        *("--max_steps", str(plan.launcher_steps), "--max_train_samples", "256", "--learning_rate", "1e-3"),
        *("--save_strategy", "no", "--logging_steps", "1", "--report_to", "none"),
        *plan.launcher_overrides,
    ]
    command = [sys.executable, "-m", "reversal_hf.cli", "train", plan.launcher_recipe, "--", *overrides]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise CheckFailed(
            f"{accelerate_config}: `reversal-hf train` exited {result.returncode}: {result.stderr[-3000:]}"
        )


def launcher(plan: Plan, model_dir: Path, dataset_dir: Path, work: Path) -> dict[str, Any]:
    """Train single-device and ZeRO-3 from the same init, reload both in a fresh process, compare their logits."""
    runs = {}
    for name, accelerate_config in zip(("single", "zero3"), plan.launcher_configs, strict=True):
        started = time.perf_counter()
        launch_train(plan, accelerate_config, model_dir, dataset_dir, work / f"train_{name}")
        info = json.loads((work / f"train_{name}" / "run_info.json").read_text())
        runs[name] = {
            "accelerate_config": accelerate_config,
            "wall_s": round(time.perf_counter() - started, 1),
            "train_loss": info["train_loss"],
            "zero3": info["zero3"],
        }
    if runs["zero3"]["zero3"] is None:
        raise CheckFailed(f"{plan.launcher_configs[1]}: the run's parameters were not ZeRO-3 partitioned")
    folders = {"init": str(model_dir), "single": str(work / "train_single"), "zero3": str(work / "train_zero3")}
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as fresh_process:
        try:
            gaps = fresh_process.submit(logit_gaps, folders).result(timeout=300)
        except Exception as error:
            raise CheckFailed(f"reloading the trained models failed: {type(error).__name__}: {error}") from error
    if not gaps["zero3_vs_single"] < min(gaps["single_vs_init"], gaps["zero3_vs_init"]):
        raise CheckFailed(f"the ZeRO-3 and single-device models disagree more than training moved them: {gaps}")
    return {"runs": runs, "max_logit_difference": gaps, "value": gaps["zero3_vs_single"]}


def logit_gaps(folders: dict[str, str]) -> dict[str, float]:
    """The largest logit differences on one prompt between the saved models `init`, `single` and `zero3`, each loaded
    from its folder (`launcher` calls it in a fresh process: what was saved, not what is in memory)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(folders["init"])(RELOAD_PROMPT, return_tensors="pt")
    logits = {}
    for name, folder in folders.items():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        with torch.no_grad():
            logits[name] = model(**ids).logits[0]

    def gap(a: str, b: str) -> float:
        return (logits[a] - logits[b]).abs().max().item()

    return {
        "zero3_vs_single": gap("zero3", "single"),
        "single_vs_init": gap("single", "init"),
        "zero3_vs_init": gap("zero3", "init"),
    }


def evaluation(plan: Plan, model_dir: Path, dataset_dir: Path) -> dict[str, Any]:
    """`bench_eval.run`: the batched Exp 1 evaluator against the per-example loop, and whether their metrics agree.

    Disagreement is recorded, not raised: a random-init model's logits are nearly flat, so on a GPU the last bits of
    a batched kernel can flip a greedy choice that the CPU run (tests/test_gpu_check.py) shows to be identical.
    """
    args = argparse.Namespace(
        model=str(model_dir),
        dataset=dataset_dir,
        revision=None,
        max_examples_per_split=plan.eval_examples_per_split,
        batch_size=32,
        seed=0,
        threads=None,
    )
    result = bench_eval.run(args)
    kept = ("rows", "per_example_s", "batched_s", "speedup", "exact_match_identical", "max_mean_logprob_difference")
    return {key: result[key] for key in kept} | {"value": result["speedup"]}


def run_part(name: str, part: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One part's result with its wall time; a failure is recorded (and printed) instead of ending the check."""
    print(f"[gpu-check] {name} ...", flush=True)
    started = time.perf_counter()
    try:
        result = part()
    except Exception as error:  # one broken part must not lose the others' numbers from a rare GPU run
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error) else ''}"}
    finally:  # the next part's training processes need the memory this process's allocator would keep reserved
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print(f"[gpu-check] {name}: {json.dumps({k: v for k, v in result.items() if k in ('value', 'error', 'wall_s')})}")
    return result


def ensure_dataset(dataset_dir: Path | None, work: Path) -> Path:
    """The built Exp 1 dataset, or a fresh reference build in `work` (the GPU machine gets no `build/`)."""
    default = paths.DATASETS_DIR / "reversal-exp1"
    if dataset_dir is not None or (default / "data").is_dir():
        return dataset_dir or default
    from reversal_hf.data import exp1

    output = work / "reversal-exp1"
    if exp1.main(["--source", "paper", "--output", str(output)]) != 0:
        raise CheckFailed("building the Exp 1 dataset failed")
    return output


def versions() -> dict[str, str | None]:
    found = {"python": sys.version.split()[0]}
    for name in ("torch", "transformers", "trl", "accelerate", "deepspeed", "datasets", "peft", "huggingface_hub"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def markdown_table(report: dict[str, Any]) -> str:
    """The committed summary: one row per part, its measured value, the target and whether it was met."""
    parts = report["parts"]
    paper, pack, launch, evaluate = (parts[name] for name in ("paper_batch", "packed", "launcher", "evaluation"))

    def cell(result: dict[str, Any], text: Callable[[dict[str, Any]], str]) -> str:
        if "skipped" in result:
            return f"skipped ({result['skipped']})"
        return f"error: {result['error']}" if "error" in result else text(result)

    def met(name: str) -> str:  # the targets are the GPU's; the tiny CPU mode only proves that the parts run
        value = parts[name].get("value")
        return "-" if value is None or tiny else ("yes" if value >= TARGETS[name] else "no")

    tiny = report["mode"] == "tiny"
    small, large = ("tiny", "tiny") if tiny else ("SmolLM2-135M", "1B")

    rows = [
        (f"1. paper batch, {small} shape, batch 16", cell(paper, lambda r: (
            f"TRL default {r['results']['trl_default']['tokens_per_s']:,.0f} tokens/s, TRL padding-free "
            f"{r['results']['trl_padding_free']['tokens_per_s']:,.0f}, our collator "
            f"{r['results']['ours']['tokens_per_s']:,.0f}: best ({r['best_arm']}) **{r['speedup']:.1f}x**")),
         f">= {TARGETS['paper_batch']:g}x", met("paper_batch")),
        (f"2. packed {large} shape, isolated rows", cell(pack, lambda r: "; ".join(
            f"{arm} {r[arm]['tokens_per_s']:,.0f} tokens/s, MFU "
            + (f"**{r[arm]['mfu']:.1%}**" if r[arm]["mfu"] is not None else "n/a")
            for arm in ("eager", "compiled") if arm in r)), f">= {TARGETS['packed']:.0%} MFU", met("packed")),
        ("3. `reversal-hf train`, single device and ZeRO-3", cell(launch, lambda r: (
            f"reloaded; max logit difference ZeRO-3 vs single {r['max_logit_difference']['zero3_vs_single']:.3g}, "
            f"single vs init {r['max_logit_difference']['single_vs_init']:.3g}")), "trained alike",
         "-" if "skipped" in launch else "no" if "error" in launch else "yes"),
        ("4. Exp 1 evaluation, batched vs per-example", cell(evaluate, lambda r: (
            f"{r['rows']} rows: {r['per_example_s']} s vs {r['batched_s']} s: **{r['speedup']:.1f}x**; "
            f"exact match identical: {r['exact_match_identical']}")),
         f">= {TARGETS['evaluation']:g}x", met("evaluation")),
    ]  # fmt: skip
    lines = [
        f"# GPU check: {report['device']}, {report['date']} ({report['mode']} mode)",
        "",
        f"Versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}. Total {report['wall_s']} s.",
        "",
        "| part | measured | target | met |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
    ]
    return "\n".join(lines) + "\n"


def device_slug(device_name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and a few steps (the CPU mode CI runs)")
    parser.add_argument("--out", type=Path, default=paths.REPO_ROOT / "results" / "gpu", help="folder of the report")
    parser.add_argument("--dataset", type=Path, default=None, help="built reversal-exp1 (default: build/ or built)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="bf16 dense peak (default: from the name)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="run only these parts")
    args = parser.parse_args(argv)
    on_cuda = torch.cuda.is_available()
    if not on_cuda and not args.tiny:
        parser.error("no CUDA device: pass --tiny for the CPU mode")
    plan = TINY_PLAN if args.tiny else GPU_PLAN
    device = torch.device("cuda" if on_cuda else "cpu")
    device_name = torch.cuda.get_device_name() if on_cuda else "CPU"
    peak = args.peak_tflops * 1e12 if args.peak_tflops else bf16_peak_flops(device_name) if on_cuda else None
    started = time.perf_counter()
    stem = args.out / f"{device_slug(device_name)}-{datetime.now(UTC):%Y-%m-%d}"
    if set(args.parts) != set(PARTS):  # a rerun of some parts keeps the first run's report
        stem = stem.with_name("-".join([stem.name, *(name for name in PARTS if name in args.parts)]))
    results: dict[str, dict[str, Any]] = {
        name: {"skipped": "not reached: the run stopped first" if name in args.parts else "not asked for"}
        for name in PARTS
    }
    report = {
        "device": device_name,
        "mode": "tiny" if args.tiny else "full",
        "versions": versions(),
        "plan": asdict(plan),
        "targets": TARGETS,
        "parts": results,
    }
    with tempfile.TemporaryDirectory(prefix="gpu_check.") as scratch:
        work = Path(scratch)
        dataset_dir = ensure_dataset(args.dataset, work)
        model_dir = build_random_model(plan.paper_shape, dataset_texts(dataset_dir), work / "model")
        parts = {
            "paper_batch": lambda: paper_batch(plan, model_dir, dataset_dir, work),
            "packed": lambda: packed(plan, device, peak),
            "launcher": lambda: launcher(plan, model_dir, dataset_dir, work),
            "evaluation": lambda: evaluation(plan, model_dir, dataset_dir),
        }
        for name in args.parts:
            results[name] = run_part(name, parts[name])
            # Written after every part: a GPU lease that ends mid-run still returns the parts that finished.
            report.update(
                date=datetime.now(UTC).isoformat(timespec="seconds"), wall_s=round(time.perf_counter() - started, 1)
            )
            write_json(stem.with_suffix(".json"), report)
            write_text(stem.with_suffix(".md"), markdown_table(report))
    print(markdown_table(report))
    print(f"wrote {stem}.json and {stem}.md")
    return 1 if any("error" in result for result in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
