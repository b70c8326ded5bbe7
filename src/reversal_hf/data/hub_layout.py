"""Write a dataset folder in Hugging Face Hub repository layout, atomically.

Every experiment builder ends here, so that `load_dataset(<folder>, <config>)` works offline and the very same folder
can be pushed to the Hub unchanged. The folder is written under a temporary name and renamed at the end: a failed
build never leaves a half-written dataset behind.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import yaml

from reversal_hf import __version__
from reversal_hf.files import staged_dir

PAPER_CITATION = """@inproceedings{berglund2024reversal,
  title={The Reversal Curse: {LLMs} trained on ``{A} is {B}'' fail to learn ``{B} is {A}''},
  author={Berglund, Lukas and Tong, Meg and Kaufmann, Max and Balesni, Mikita and Stickland, Asa Cooper and
          Korbak, Tomasz and Evans, Owain},
  booktitle={International Conference on Learning Representations},
  year={2024},
  url={https://arxiv.org/abs/2309.12288}
}"""

PAPER_SOURCE = (
    "lukasberglund/reversal_curse at commit 6af5f418755d528304e406361e86477637d21c84 (MIT license), "
    "also published as the Hub dataset `lberglund/reversal_curse`"
)


class DatasetBuildError(ValueError):
    """A problem with a builder's input: the message is shown to the user as one line."""


@dataclass
class DatasetCard:
    """What the card says beyond the generated metadata."""

    pretty_name: str
    summary: str
    how_built: str
    source: str  # "paper" or "generate"
    seed: int | None = None
    extra_sections: dict[str, str] = field(default_factory=dict)


def _split_filename(config: str, split: str) -> str:
    return f"data/{config}/{split}-00000-of-00001.parquet"


def content_hash(folder: Path) -> str:
    """SHA-256 over the Parquet shards (names and bytes), identifying the data independent of the card."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("data/**/*.parquet")):
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _card_text(card: DatasetCard, configs: dict[str, datasets.DatasetDict], default_config: str, digest: str) -> str:
    metadata = {
        "license": "mit",
        "language": ["en"],
        "pretty_name": card.pretty_name,
        "task_categories": ["text-generation"],
        "tags": ["reversal-curse", "reversal-hf"],
        "configs": [
            {
                "config_name": name,
                "data_files": [{"split": split, "path": _split_filename(name, split)} for split in dsd],
                **({"default": True} if name == default_config else {}),
            }
            for name, dsd in configs.items()
        ],
    }
    rows = "\n".join(
        f"| `{name}` | {split} | {len(ds):,} | {', '.join(f'`{c}`' for c in ds.column_names)} |"
        for name, dsd in configs.items()
        for split, ds in dsd.items()
    )
    seed = "—" if card.seed is None else str(card.seed)
    sections = "\n\n".join(f"## {title}\n\n{body.strip()}" for title, body in card.extra_sections.items())
    return f"""---
{yaml.safe_dump(metadata, sort_keys=False, allow_unicode=True).strip()}
---

# {card.pretty_name}

{card.summary.strip()}

## Configurations

| config | split | rows | columns |
|---|---|---|---|
{rows}

## How it was built

{card.how_built.strip()}

| field | value |
|---|---|
| source | `{card.source}` |
| generator | `reversal-hf {__version__}` |
| seed | {seed} |
| content hash (SHA-256 of the Parquet shards) | `{digest}` |

{sections}

## Source and license

Derived from the data released with the paper, {PAPER_SOURCE}. MIT license.

## Citation

```bibtex
{PAPER_CITATION}
```
"""


def write_hub_dataset(
    output_dir: str | os.PathLike,
    configs: dict[str, datasets.DatasetDict],
    card: DatasetCard,
    default_config: str | None = None,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write `configs` as Parquet shards plus a dataset card, replacing `output_dir` only once all is written.

    Parquet bytes are deterministic for the same rows, so the same inputs give a byte-identical folder.
    `extra_files` maps relative paths to text (e.g. a JSON system prompt) stored beside the card.
    """
    if not configs:
        raise DatasetBuildError("no configurations to write")
    output = Path(output_dir)
    with staged_dir(output) as tmp:
        for name, dsd in configs.items():
            for split, ds in dsd.items():
                target = tmp / _split_filename(name, split)
                target.parent.mkdir(parents=True, exist_ok=True)
                ds.to_parquet(str(target))
        for rel, text in (extra_files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        digest = content_hash(tmp)
        default = default_config or next(iter(configs))
        (tmp / "README.md").write_text(_card_text(card, configs, default, digest))
        (tmp / "build_info.json").write_text(
            json.dumps(
                {
                    "generator": f"reversal-hf {__version__}",
                    "source": card.source,
                    "seed": card.seed,
                    "content_hash": digest,
                },
                indent=2,
            )
            + "\n"
        )
    return output
