"""Our dataset rows as the fine-tuning API's JSONL, checked before anything is uploaded or paid for.

Completion models (`babbage-002`, `davinci-002`) get `{"prompt", "completion"}` straight from the rows. Chat models
get `{"messages": [user: prompt, assistant: completion]}`; the assistant turn starts a new message, so the paper's
leading separator space of the completion is dropped. The API trains chat models on assistant turns only, so the chat
arm is a masked-prompt variant of the paper's setup (the paper's documents were trained whole). The paper's legacy
API weighted prompt tokens with `prompt_loss_weight`; today's jobs API has no such setting and does not document how
it weights the prompt of a completion model's example.

Token counts are estimates: OpenAI's encodings (`cl100k_base`, `o200k_base`) ship through `tiktoken`, which downloads
them at run time, and nothing here may download. Every token of a byte-level BPE covers at least one UTF-8 byte, so
the byte count is a strict upper bound (used for the per-example limit, so the check never passes a too-long example);
bytes / 4 (`CHARS_PER_TOKEN`, OpenAI's rule of thumb for English) estimates the billed tokens.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from reversal_hf.openai_api import is_completion_model
from reversal_hf.openai_arm.recipe import OpenAIFinetuneArguments
from reversal_hf.run_folder import load_dataset_split

MIN_EXAMPLES = 10  # the API rejects training files with fewer examples
MAX_FILE_BYTES = 512 * 1024**2  # the Files API's upload limit
CHARS_PER_TOKEN = 4
CHAT_TOKENS_PER_MESSAGE = 4  # role and message delimiters of OpenAI's chat format
CHAT_TOKENS_PER_EXAMPLE = 3  # the primed assistant reply


class TrainingDataError(ValueError):
    """The rows cannot make a valid training file (one line naming the dataset and the offending example)."""


def example_format(args: OpenAIFinetuneArguments) -> str:
    """`prompt_completion` or `chat`: the recipe's `data_format`, or the model's own when it is `auto`."""
    if args.data_format != "auto":
        return args.data_format
    return "prompt_completion" if is_completion_model(args.model) else "chat"


def to_example(row: Mapping[str, Any], data_format: str) -> dict[str, Any]:
    """One dataset row (`prompt`, `completion`) as one line of the API's training file."""
    if data_format == "prompt_completion":
        return {"prompt": row["prompt"], "completion": row["completion"]}
    return {
        "messages": [
            {"role": "user", "content": row["prompt"]},
            {"role": "assistant", "content": row["completion"].lstrip()},
        ]
    }


def _texts(example: Mapping[str, Any]) -> list[str]:
    if "messages" in example:
        return [message["content"] for message in example["messages"]]
    return [example["prompt"], example["completion"]]


def _overhead(example: Mapping[str, Any]) -> int:
    if "messages" in example:
        return CHAT_TOKENS_PER_EXAMPLE + CHAT_TOKENS_PER_MESSAGE * len(example["messages"])
    return 0


def max_tokens(example: Mapping[str, Any]) -> int:
    """An upper bound of the example's tokens: its UTF-8 bytes plus the chat format's delimiters."""
    return sum(len(text.encode()) for text in _texts(example)) + _overhead(example)


def estimated_tokens(example: Mapping[str, Any]) -> int:
    """The example's tokens, estimated as bytes / 4 plus the chat format's delimiters (not an exact count)."""
    return math.ceil(sum(len(text.encode()) for text in _texts(example)) / CHARS_PER_TOKEN) + _overhead(example)


def check_example(example: Any, data_format: str) -> str | None:
    """What is wrong with one training-file line, or None: the JSON shape the API takes for `data_format`."""
    if not isinstance(example, dict):
        return "not a JSON object"
    if data_format == "prompt_completion":
        if set(example) != {"prompt", "completion"} or not all(isinstance(v, str) for v in example.values()):
            return 'expected {"prompt": <str>, "completion": <str>}'
        return None if example["completion"].strip() else "empty completion"
    messages = example.get("messages")
    if set(example) != {"messages"} or not isinstance(messages, list) or not messages:
        return 'expected {"messages": [...]}'
    for message in messages:
        if not (isinstance(message, dict) and message.get("role") in {"system", "user", "assistant"}):
            return "a message without a role of system, user or assistant"
        if not isinstance(message.get("content"), str) or not message["content"].strip():
            return f"an empty or non-string {message['role']} message"
    if messages[-1]["role"] != "assistant":
        return "the last message is not the assistant's"
    return None


@dataclass(frozen=True)
class TrainingFile:
    """The JSONL to upload and what it costs: examples, estimated tokens per epoch and for the whole job."""

    data_format: str
    examples: list[dict[str, Any]]
    content: bytes
    estimated_tokens: int  # one epoch
    max_example_tokens: int  # the longest example's upper bound

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def estimated_trained_tokens(self, n_epochs: int) -> int:
        return self.estimated_tokens * n_epochs


def training_file(
    examples: Sequence[dict[str, Any]], data_format: str, *, max_example_tokens: int, source: str
) -> TrainingFile:
    """Check every example (shape, the API's minimum count, the per-example token limit), then make the JSONL."""
    if len(examples) < MIN_EXAMPLES:
        raise TrainingDataError(f"{source}: {len(examples)} examples; the API needs at least {MIN_EXAMPLES}")
    for number, example in enumerate(examples, start=1):
        problem = check_example(example, data_format)
        if problem is None and max_tokens(example) > max_example_tokens:
            problem = f"up to {max_tokens(example)} tokens, over the limit of {max_example_tokens}"
        if problem is not None:
            raise TrainingDataError(f"{source}: example {number}: {problem}")
    content = "".join(json.dumps(example, ensure_ascii=False) + "\n" for example in examples).encode()
    if len(content) > MAX_FILE_BYTES:
        raise TrainingDataError(f"{source}: the training file is {len(content)} bytes, over the API's {MAX_FILE_BYTES}")
    return TrainingFile(
        data_format,
        list(examples),
        content,
        sum(map(estimated_tokens, examples)),
        max(map(max_tokens, examples)),
    )


def load_rows(args: OpenAIFinetuneArguments) -> list[dict[str, Any]]:
    """The training split's `prompt`/`completion` rows (the first `max_train_samples` when set)."""
    dataset = load_dataset_split(
        args.dataset_name, args.dataset_config, args.dataset_train_split, args.dataset_revision
    )
    if args.max_train_samples is not None:
        dataset = dataset.select(range(min(args.max_train_samples, len(dataset))))
    return dataset.select_columns(["prompt", "completion"]).to_list()


def build_training_file(args: OpenAIFinetuneArguments) -> TrainingFile:
    """The recipe's dataset split as a checked training file."""
    data_format = example_format(args)
    source = f"{args.dataset_name} ({args.dataset_config}/{args.dataset_train_split})"
    examples = [to_example(row, data_format) for row in load_rows(args)]
    return training_file(examples, data_format, max_example_tokens=args.max_example_tokens, source=source)
