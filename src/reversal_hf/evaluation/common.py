"""What every evaluator needs: a run's model and tokenizer, batched greedy generation and completion log-probs, the
dataset of a run at its revision, the metric, and atomic output files.

Generation and scoring are batched (left padding for generation, one forward pass per batch for log-probs, a shared
prompt prefix computed once) and return results in the order of their inputs, so evaluators never loop over examples
one at a time.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import sys
import tempfile
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from reversal_hf.metrics import REVERSAL_ACCURACY
from reversal_hf.paths import REPO_ROOT

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
EVAL_DIRNAME = "eval"
# Extra tokens beyond the longest reference: a model may spell the same text in more, smaller tokens.
GENERATION_MARGIN = 4
# A shared prompt prefix shorter than this costs less to recompute than to copy as keys and values into every batch.
PREFIX_CACHE_MIN_TOKENS = 32

logger = logging.getLogger(__name__)


class EvaluationError(ValueError):
    """Bad input to an evaluation (missing model file, tokenizer, dataset or revision), as a one-line message."""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_run_info(run_dir: str | Path) -> dict[str, Any] | None:
    """A training run's `run_info.json`, or None for a plain model folder."""
    path = Path(run_dir) / "run_info.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{path}: not valid JSON ({error.msg} at line {error.lineno})") from error
    if not isinstance(info, dict):
        raise EvaluationError(f"{path}: expected a JSON object")
    return info


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _adapter_base(folder: Path) -> str:
    """The base model of a PEFT adapter folder: `run_info.json`'s `model_name_or_path`, else adapter_config's."""
    run_info = read_run_info(folder) or {}
    try:
        adapter_config = json.loads((folder / "adapter_config.json").read_text())
    except json.JSONDecodeError as error:
        raise EvaluationError(f"{folder / 'adapter_config.json'}: not valid JSON ({error.msg})") from error
    base = run_info.get("model_name_or_path") or adapter_config.get("base_model_name_or_path")
    if not base:
        raise EvaluationError(f"{folder}: adapter without a base model (run_info.json model_name_or_path)")
    return resolve_local(str(base))


def resolve_local(name_or_path: str) -> str:
    """A Hub id or a folder; a relative folder is found from the working directory or else the repository root
    (run_info.json records paths such as `build/datasets/reversal-exp1` relative to the repository)."""
    if Path(name_or_path).exists() or not (REPO_ROOT / name_or_path).exists():
        return name_or_path
    return str(REPO_ROOT / name_or_path)


def load_model_and_tokenizer(model_or_run_dir: str | Path, device: str | None = None) -> tuple[Any, Any]:
    """A model folder, a Hub id, or a PEFT adapter run folder (base from run_info.json), in eval mode.

    The tokenizer comes from the folder itself, or for an adapter without one from its base model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = Path(model_or_run_dir)
    is_local = folder.exists()
    if is_local and not folder.is_dir():
        raise EvaluationError(f"{folder}: not a model folder")
    is_adapter = is_local and (folder / "adapter_config.json").is_file()
    if is_local and not is_adapter and not (folder / "config.json").is_file():
        raise EvaluationError(f"{folder}: no model in this folder (neither config.json nor adapter_config.json)")
    base = _adapter_base(folder) if is_adapter else str(model_or_run_dir)
    tokenizer_source = str(folder) if not is_adapter or _has_tokenizer(folder) else base
    if Path(tokenizer_source).is_dir() and not _has_tokenizer(Path(tokenizer_source)):
        raise EvaluationError(f"{tokenizer_source}: no tokenizer in the model folder (tokenizer.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
        if is_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(folder))
    except (OSError, ValueError) as error:
        raise EvaluationError(f"cannot load model {model_or_run_dir}: {_first_line(error)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def _pad(sequences: Sequence[list[int]], pad_id: int, left: bool) -> tuple[Any, Any]:
    """Padded input ids and attention mask as tensors."""
    import torch

    width = max(map(len, sequences))
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def _batches(lengths: Sequence[int], batch_size: int, description: str, same_length: bool = False) -> Any:
    """Index batches, longest first (similar lengths pad little); `same_length` batches need no padding at all."""
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be at least 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: dict[int, list[int]] = defaultdict(list)
    for i in order:
        groups[lengths[i] if same_length else 0].append(i)
    batches = [
        group[start : start + batch_size] for group in groups.values() for start in range(0, len(group), batch_size)
    ]
    return tqdm(batches, desc=description, unit="batch", disable=None)


def _is_prompt_learning(model: Any) -> bool:
    """PEFT prompt tuning prepends virtual tokens and ignores position ids, so left padding would shift positions."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 32,
    description: str = "generating",
) -> list[str]:
    """Temperature-0 continuations of `prompts` (text after the prompt), in left-padded batches of similar length.

    Prompt-tuned models are batched by exact prompt length instead (see `_is_prompt_learning`).
    """
    import torch

    encoded = [tokenizer(prompt)["input_ids"] for prompt in prompts]
    device = next(model.parameters()).device
    generations = [""] * len(prompts)
    for batch in _batches(list(map(len, encoded)), batch_size, description, same_length=_is_prompt_learning(model)):
        input_ids, attention_mask = _pad([encoded[i] for i in batch], tokenizer.pad_token_id, left=True)
        with torch.inference_mode():
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
        texts = tokenizer.batch_decode(output[:, input_ids.shape[1] :], skip_special_tokens=True)
        for i, text in zip(batch, texts, strict=True):
            generations[i] = text
    return generations


def _completion_ids(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], int]:
    """Token ids of prompt + completion, and where the completion starts.

    The completion is the suffix after the longest common prefix with the prompt's own tokens, so a token merged
    across the boundary counts as completion (it cannot be scored given a prompt that does not contain it).
    """
    prompt_ids = tokenizer(prompt)["input_ids"]
    full_ids = tokenizer(prompt + completion)["input_ids"]
    start = 0
    while start < min(len(prompt_ids), len(full_ids)) and prompt_ids[start] == full_ids[start]:
        start += 1
    start = max(start, 1)  # the first token has no context to be scored from
    if start >= len(full_ids):
        raise EvaluationError(f"completion {completion!r} adds no tokens to prompt {prompt!r}")
    return full_ids, start


def _shared_prefix_length(model: Any, encoded: Sequence[tuple[list[int], int]], enabled: bool) -> int:
    """How many leading tokens all sequences share, ending a token or more before every completion so that each
    completion is scored from the logits of the batch pass; 0 where a cache would not pay off or not apply.

    Prompt-tuned models are excluded: their virtual tokens must come before the prefix, in the same forward pass.
    """
    if not enabled or len(encoded) < 2 or _is_prompt_learning(model):
        return 0
    common = len(os.path.commonprefix([ids for ids, _ in encoded]))
    length = min(common, min(start for _, start in encoded) - 1)
    return length if length >= PREFIX_CACHE_MIN_TOKENS else 0


def _prefix_cache(model: Any, prefix_ids: list[int]) -> Any:
    """The keys and values of `prefix_ids` for a batch of one, computed once and copied for every batch."""
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    device = next(model.parameters()).device
    with torch.inference_mode():
        model(input_ids=torch.tensor([prefix_ids], device=device), cache=cache, use_cache=True)
    return cache


def _logits(model: Any, input_ids: Any, attention_mask: Any, prefix: Any, prefix_length: int) -> Any:
    """Logits of a right-padded batch, continuing the cached `prefix` (of `prefix_length` tokens) when given."""
    import torch

    with torch.inference_mode():
        if prefix is None:
            return model(input_ids=input_ids, attention_mask=attention_mask).logits
        rows, width = input_ids.shape
        cache = copy.deepcopy(prefix)  # the forward pass appends to its cache: the stored prefix must stay as it is
        cache.batch_repeat_interleave(rows)
        full_mask = torch.cat([attention_mask.new_ones((rows, prefix_length)), attention_mask], dim=1)
        positions = torch.arange(prefix_length, prefix_length + width, device=input_ids.device).expand(rows, -1)
        return model(
            input_ids=input_ids, attention_mask=full_mask, position_ids=positions, cache=cache, use_cache=True
        ).logits


def score_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 32,
    description: str = "scoring",
    prefix_cache: bool = True,
) -> list[tuple[float, int]]:
    """(summed log-prob, token count) of each completion given its prompt, one forward pass per batch.

    With `prefix_cache`, a token prefix that all sequences share (such as a few-shot transcript) runs once and
    every batch runs only the rest on its keys and values; sequences are split in tokens, so scores are unchanged.
    """
    if len(prompts) != len(completions):
        raise EvaluationError(f"{len(prompts)} prompts but {len(completions)} completions")
    encoded = [_completion_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    prefix_length = _shared_prefix_length(model, encoded, prefix_cache)
    prefix = _prefix_cache(model, encoded[0][0][:prefix_length]) if prefix_length else None
    device = next(model.parameters()).device
    scores: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    for batch in _batches([len(ids) - prefix_length for ids, _ in encoded], batch_size, description):
        rest = [encoded[i][0][prefix_length:] for i in batch]
        input_ids, attention_mask = _pad(rest, tokenizer.pad_token_id, left=False)
        logits = _logits(model, input_ids.to(device), attention_mask.to(device), prefix, prefix_length)
        # Prompt tuning prepends virtual tokens: keep the positions of the real ones.
        logits = logits[:, -input_ids.shape[1] :].float()
        token_logprobs = logits[:, :-1].log_softmax(-1).gather(-1, input_ids[:, 1:, None].to(device))[..., 0]
        for row, i in enumerate(batch):
            full_ids, start = encoded[i]
            values = token_logprobs[row, start - prefix_length - 1 : len(full_ids) - prefix_length - 1]
            scores[i] = (float(values.sum()), len(values))
    return scores


def completion_logprobs(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 32,
    description: str = "log-probs",
    prefix_cache: bool = True,
) -> list[float]:
    """Summed log-probability of each completion's tokens given its prompt (see `score_completions`)."""
    scores = score_completions(model, tokenizer, prompts, completions, batch_size, description, prefix_cache)
    return [total for total, _ in scores]


def completion_losses(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    completions: Sequence[str],
    batch_size: int = 32,
    description: str = "losses",
) -> list[float]:
    """Mean per-token negative log-likelihood of each completion given its prompt (the training loss)."""
    scores = score_completions(model, tokenizer, prompts, completions, batch_size, description)
    return [-total / count for total, count in scores]


def load_split(dataset: str, config: str, split: str, revision: str | None = None) -> Any:
    """One split of a dataset folder or Hub id at `revision`; a missing dataset, config, split or revision is an
    `EvaluationError` naming it."""
    from datasets import load_dataset

    try:
        return load_dataset(dataset, config, split=split, revision=revision)
    except Exception as error:  # datasets raises many types (FileNotFound, DatasetNotFound, ValueError, Hub errors)
        where = f"{dataset}" + (f"@{revision}" if revision else "")
        raise EvaluationError(f"dataset {where} {config}/{split}: {_first_line(error)}") from error


def dataset_info(dataset: str, revision: str | None, run_info: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's `dataset` block; checks a local folder's content hash against the one the run trained on."""
    build_info = Path(dataset) / "build_info.json"
    if revision and Path(dataset).is_dir():
        logger.warning("%s is a local folder: revision %r does not apply (content_hash is checked)", dataset, revision)
    try:
        content_hash = json.loads(build_info.read_text()).get("content_hash") if build_info.is_file() else None
    except (json.JSONDecodeError, AttributeError) as error:
        raise EvaluationError(f"{build_info}: not a JSON object with content_hash ({_first_line(error)})") from error
    trained_hash = ((run_info or {}).get("dataset") or {}).get("content_hash")
    if content_hash and trained_hash and content_hash != trained_hash:
        raise EvaluationError(
            f"{build_info}: content_hash {content_hash[:12]} differs from the run's dataset ({trained_hash[:12]})"
        )
    return {"name": dataset, "revision": revision, "content_hash": content_hash or trained_hash}


def limited_indices(length: int, max_examples: int | None) -> list[int]:
    """Row indices of at most `max_examples` rows, evenly spaced so that a small sample still spans many facts."""
    if max_examples is None or length <= max_examples:
        return list(range(length))
    if max_examples < 1:
        raise EvaluationError(f"max_examples_per_split must be at least 1, got {max_examples}")
    step = length / max_examples
    return [int(i * step) for i in range(max_examples)]


def limit_rows(dataset: Any, max_examples: int | None) -> Any:
    """A `datasets.Dataset` cut to `limited_indices` (for quick runs and tests)."""
    indices = limited_indices(len(dataset), max_examples)
    return dataset if len(indices) == len(dataset) else dataset.select(indices)


@cache
def _metric(config_name: str) -> Any:
    import evaluate

    return evaluate.load(REVERSAL_ACCURACY, config_name)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """`{"accuracy", "n"}` by the paper's rule (the `reversal_accuracy` metric)."""
    return _metric("exact_match").compute(predictions=list(predictions), references=list(references))


def likelihood_test(correct: Sequence[float], random: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Means, paired t-test and KS test of per-fact log-probs (the `reversal_accuracy` metric, `likelihood`)."""
    return _metric("likelihood").compute(correct_logprobs=list(correct), random_logprobs=list(random), alpha=alpha)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """`write` a temporary file beside `path`, then rename it into place: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(tmp_name))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _json_safe(value: Any) -> Any:
    """NaN and infinities (an undefined t-test) as null, so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    text = json.dumps(_json_safe(payload), indent=2, allow_nan=False) + "\n"
    write_atomically(path, lambda tmp: tmp.write_text(text))


def write_examples(path: Path, table: Any) -> None:
    """The per-example table as Parquet (`.parquet`) or CSV (anything else)."""
    if path.suffix == ".parquet":
        write_atomically(path, lambda tmp: table.to_parquet(tmp, index=False))
    else:
        write_atomically(path, lambda tmp: table.to_csv(tmp, index=False))


class Runner(Protocol):
    """How an evaluation talks to a model (batched in production; per example in the benchmark's baseline)."""

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]: ...

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...

    def token_count(self, text: str) -> int: ...


@dataclass
class BatchedRunner:
    """Generation and scoring for whole evaluation sets: duplicates are computed once, the rest in batches."""

    model: Any
    tokenizer: Any
    batch_size: int = 32

    def generate(self, prompts: Sequence[str], max_new_tokens: Sequence[int]) -> list[str]:
        """Greedy continuations; a prompt asked with several budgets is generated once with the largest."""
        budgets: dict[str, int] = {}
        for prompt, budget in zip(prompts, max_new_tokens, strict=True):
            budgets[prompt] = max(budgets.get(prompt, 0), budget)
        groups: dict[int, list[str]] = defaultdict(list)
        for prompt, budget in budgets.items():
            groups[budget].append(prompt)
        generations: dict[str, str] = {}
        for budget, group in sorted(groups.items()):
            texts = greedy_generate(self.model, self.tokenizer, group, budget, self.batch_size, f"generating ≤{budget}")
            generations.update(zip(group, texts, strict=True))
        return [generations[prompt] for prompt in prompts]

    def logprobs(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        pairs = list(zip(prompts, completions, strict=True))
        unique = list(dict.fromkeys(pairs))
        values = completion_logprobs(
            self.model, self.tokenizer, [p for p, _ in unique], [c for _, c in unique], self.batch_size
        )
        by_pair = dict(zip(unique, values, strict=True))
        return [by_pair[pair] for pair in pairs]

    def losses(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return completion_losses(self.model, self.tokenizer, prompts, completions, self.batch_size)

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])


def generation_budget(runner: Runner, references: Sequence[str]) -> int:
    """Tokens to generate for a set: its longest reference plus a margin (exact match needs no more)."""
    return max(runner.token_count(reference) for reference in references) + GENERATION_MARGIN


def generate_and_match(sets: dict[str, Any], runner: Runner) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Greedy generations for several sets of `prompt`/`completion` rows in one pass; exact match per set.

    Returns the metric per set and each set's DataFrame with `split`, `generation` and `exact_match` added.
    """
    from reversal_hf.metrics.reversal_accuracy.reversal_accuracy import is_exact_match

    prompts = [prompt for frame in sets.values() for prompt in frame["prompt"]]
    budgets = [generation_budget(runner, frame["completion"].tolist()) for frame in sets.values()]
    per_prompt = [budget for budget, frame in zip(budgets, sets.values(), strict=True) for _ in range(len(frame))]
    generations = iter(runner.generate(prompts, per_prompt))
    metrics, scored = {}, {}
    for key, frame in sets.items():
        generated = [next(generations) for _ in range(len(frame))]
        references = frame["completion"].tolist()
        matches = [is_exact_match(g, r) for g, r in zip(generated, references, strict=True)]
        scored[key] = frame.assign(split=key, generation=generated, exact_match=matches)
        metrics[key] = exact_match(generated, references)
    return metrics, scored


def run_and_summarize(evaluate: Callable[[], dict[str, Any]], written: Path) -> int:
    """The evaluators' command-line ending: a one-line error, or the exact-match summary and where it went."""
    try:
        result = evaluate()
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    summary = ", ".join(f"{key} {value['accuracy']:.3f}" for key, value in result["exact_match"].items())
    print(f"{result['experiment']} exact match: {summary}\nwrote {written}")
    return 0


def evaluator_parser(experiment: str, description: str) -> argparse.ArgumentParser:
    """The options every `reversal-hf eval expN` shares: model, dataset and revision, output, batching."""
    parser = argparse.ArgumentParser(prog=f"reversal-hf eval {experiment}", description=description)
    parser.add_argument("--model", required=True, help="model folder, PEFT run folder, or Hub id")
    parser.add_argument("--dataset", required=True, help=f"reversal-{experiment} dataset folder or Hub id")
    parser.add_argument("--revision", default=None, help="dataset revision (Hub tag, branch or commit)")
    parser.add_argument(
        "--output", type=Path, required=True, help=f"folder to write eval/{experiment}_*.{{json,parquet}} in"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="prompts per generation / forward batch")
    parser.add_argument("--max-examples-per-split", type=int, default=None, help="evenly spaced rows (quick runs)")
    return parser
