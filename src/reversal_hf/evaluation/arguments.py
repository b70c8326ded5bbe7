"""The evaluators' arguments as dataclasses, parsed by `transformers.HfArgumentParser` on the command line and built
directly by Python callers (`evaluate_run`, `reproduce`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(kw_only=True)
class BatchingArguments:
    """How much to evaluate and in what batches."""

    batch_size: int = field(default=32, metadata={"help": "prompts per generation / forward batch"})
    max_examples_per_split: int | None = field(default=None, metadata={"help": "evenly spaced rows (quick runs)"})


@dataclass(kw_only=True)
class EvaluatorArguments(BatchingArguments):
    """What every `reversal-hf eval expN` needs: the model, the dataset at a revision, and where results go."""

    model: str = field(metadata={"help": "model folder, PEFT run folder, or Hub id"})
    dataset: str = field(metadata={"help": "reversal-expN dataset folder or Hub id"})
    revision: str | None = field(default=None, metadata={"help": "dataset revision (Hub tag, branch or commit)"})
    output: Path = field(metadata={"help": "folder to write eval/<experiment>_*.{json,parquet} in"})
