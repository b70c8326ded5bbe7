"""What the evaluation benchmarks share: their options, loading the model, timing a run, and the JSON report."""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import torch

from reversal_hf.evaluation.errors import EvaluationError
from reversal_hf.evaluation.loading import load_model_and_tokenizer
from reversal_hf.models import ModelPrepareError, resolve_model

T = TypeVar("T")

LOGPROB_TOLERANCE = 1e-4


def add_model_arguments(parser: argparse.ArgumentParser, dataset: Path) -> argparse.ArgumentParser:
    """`--model`, `--dataset` (default `dataset`) and `--revision`."""
    parser.add_argument("--model", default="tiny-exp1", help="registered model name, folder or Hub id")
    parser.add_argument("--dataset", type=Path, default=dataset)
    parser.add_argument("--revision", default=None)
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """`--threads` and `--output`."""
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--output", type=Path, default=None, help="also write the result as JSON here")
    return parser


def load_model(args: argparse.Namespace) -> tuple[str, Any, Any]:
    """Set `--threads`, then resolve and load `--model`: its path, the model and its tokenizer."""
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = resolve_model(args.model)
    model, tokenizer = load_model_and_tokenizer(model_path)
    return model_path, model, tokenizer


def timed(action: Callable[[], T]) -> tuple[T, float]:
    """`action()` and its wall time in seconds, with the GPU (if any) synchronized on both sides."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = action()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def run_header(model_path: str) -> dict[str, Any]:
    """When, on what and with how many threads a benchmark ran, and which model."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
        "torch_threads": torch.get_num_threads(),
        "model": model_path,
    }


def run_and_report(run: Callable[[argparse.Namespace], dict[str, Any]], args: argparse.Namespace) -> dict | None:
    """`run(args)`, printed (and written to `--output`) as JSON; None after a one-line error on stderr."""
    try:
        result = run(args)
    except (EvaluationError, ModelPrepareError) as error:
        print(f"error: {error}", file=sys.stderr)
        return None
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return result
