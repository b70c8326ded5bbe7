"""The evaluators' arguments as dataclasses, parsed by `transformers.HfArgumentParser` on the command line and built
directly by Python callers (`evaluate_run`, `reproduce`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from reversal_hf.openai_api import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_S


@dataclass(kw_only=True)
class BatchingArguments:
    """How much to evaluate and in what batches."""

    batch_size: int = field(default=32, metadata={"help": "prompts per generation / forward batch"})
    max_examples_per_split: int | None = field(default=None, metadata={"help": "evenly spaced rows (quick runs)"})


@dataclass(kw_only=True)
class EndpointArguments:
    """How to reach an OpenAI-compatible endpoint (the `openai` back-end); the key comes from OPENAI_API_KEY."""

    base_url: str | None = field(
        default=None,
        metadata={
            "help": "OpenAI-compatible endpoint (default: OPENAI_BASE_URL, else api.openai.com); key: OPENAI_API_KEY"
        },
    )
    concurrency: int = field(default=8, metadata={"help": "requests in flight (openai)"})
    max_retries: int = field(
        default=DEFAULT_MAX_RETRIES, metadata={"help": "per request, on 408/409/429/5xx/timeouts (openai)"}
    )
    timeout: float = field(default=DEFAULT_TIMEOUT_S, metadata={"help": "seconds per request (openai)"})


@dataclass(kw_only=True)
class EvaluatorArguments(BatchingArguments, EndpointArguments):
    """What every `reversal-hf eval expN` needs: the model, the dataset at a revision, and where results go."""

    backend: Literal["hf", "openai", "mlm_u"] = field(
        default="hf",
        metadata={
            "help": "hf: a local model; openai: a model at an OpenAI-compatible endpoint (temperature-0 generations, "
            "log-probs from the completions endpoint's echo); mlm_u: a local MLM-U masked LM (answers unmasked left "
            "to right, chain-rule log-probs: reversal_hf.evaluation.mlm_u)"
        },
    )
    model: str = field(
        metadata={
            "help": "model folder, PEFT run folder, or Hub id; with --backend openai: the endpoint's model name "
            "(e.g. ft:davinci-002:org::abc123) or an OpenAI run folder"
        }
    )
    dataset: str = field(metadata={"help": "reversal-expN dataset folder or Hub id"})
    revision: str | None = field(default=None, metadata={"help": "dataset revision (Hub tag, branch or commit)"})
    output: Path = field(metadata={"help": "folder to write eval/<experiment>_*.{json,parquet} in"})
