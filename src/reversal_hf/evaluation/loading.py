"""Loading what an evaluation runs: a model folder, a Hub id, or a PEFT adapter run folder on its base model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reversal_hf import files, run_folder
from reversal_hf.evaluation.errors import EvaluationError, first_line


def _adapter_base(folder: Path) -> str:
    """The base model of a PEFT adapter folder: `run_info.json`'s `model_name_or_path`, else adapter_config's."""
    run_info = run_folder.read_run_info(folder) or {}
    adapter_config = files.read_json(folder / "adapter_config.json")
    base = run_info.get("model_name_or_path") or adapter_config.get("base_model_name_or_path")
    if not base:
        raise EvaluationError(f"{folder}: adapter without a base model (run_info.json model_name_or_path)")
    return run_folder.resolve_local(str(base))


def load_model_and_tokenizer(
    model_or_run_dir: str | Path, device: str | None = None, *, masked_lm: bool = False
) -> tuple[Any, Any]:
    """A model folder, a Hub id, or a PEFT adapter run folder (base from run_info.json), in eval mode; a causal LM, or
    with `masked_lm` a masked LM (MLM-U).

    The tokenizer comes from the folder itself, or for an adapter without one from its base model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    folder = Path(model_or_run_dir)
    is_local = folder.exists()
    if is_local and not folder.is_dir():
        raise EvaluationError(f"{folder}: not a model folder")
    is_adapter = is_local and (folder / "adapter_config.json").is_file()
    if is_local and not is_adapter and not (folder / "config.json").is_file():
        raise EvaluationError(f"{folder}: no model in this folder (neither config.json nor adapter_config.json)")
    base = _adapter_base(folder) if is_adapter else str(model_or_run_dir)
    tokenizer_source = str(folder if not is_adapter or run_folder.has_tokenizer(folder) else Path(base))
    local_folders = {str(path): path for path in (folder, Path(base)) if path.is_dir()}
    try:  # the folders' files are whole: else transformers loads them silently wrong, or with a traceback
        for name, path in local_folders.items():
            run_folder.check_model_files(path, tokenizer=name == tokenizer_source)
    except run_folder.ModelFilesError as error:
        raise EvaluationError(str(error)) from error
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
        model = (AutoModelForMaskedLM if masked_lm else AutoModelForCausalLM).from_pretrained(base, dtype="auto")
        if is_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(folder))
    except (OSError, ValueError) as error:
        raise EvaluationError(f"cannot load model {model_or_run_dir}: {first_line(error)}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer
