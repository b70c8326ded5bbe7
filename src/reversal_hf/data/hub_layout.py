"""Write a dataset folder in Hugging Face Hub repository layout, atomically, and read it back exactly as built.

Every experiment builder ends here, so that `load_dataset(<folder>, <config>)` works offline and the very same folder
can be pushed to the Hub unchanged. The folder is written under a temporary name and renamed at the end: a failed
build never leaves a half-written dataset behind. `load_build` is how this project reads a local build: straight from
its shards, checked against `build_info.json`, because `datasets`' cache keys a local folder by its name and card, not
by its content, and serves one folder's rows for another of the same name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from datasets.fingerprint import Hasher
from datasets.table import InMemoryTable
from huggingface_hub import DatasetCard, DatasetCardData
from huggingface_hub.repocard import metadata_load

from reversal_hf import __version__
from reversal_hf.files import FileFormatError, read_json, staged_dir

BUILD_INFO = "build_info.json"

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


class LocalDatasetError(FileFormatError):
    """A local dataset folder cannot be read as built: no `build_info.json`, a shard that is not the one it hashed, or
    no such config or split. One line naming the folder and the file."""


# The card's metadata keys in the order the card shows them (`DatasetCardData` would otherwise put its own first).
CARD_METADATA_ORDER = ["license", "language", "pretty_name", "task_categories", "tags", "configs"]
CARD_TEMPLATE = """---
{{ metadata }}
---

# {{ pretty_name }}

{{ summary }}

## Configurations

| config | split | rows | columns |
|---|---|---|---|
{{ rows }}

## How it was built

{{ how_built }}

| field | value |
|---|---|
| source | `{{ source }}` |
| generator | `{{ generator }}` |
| seed | {{ seed }} |
| content hash (SHA-256 of the Parquet shards) | `{{ digest }}` |

{{ sections }}

## Source and license

Derived from the data released with the paper, {{ paper_source }}. MIT license.

## Citation

```bibtex
{{ citation }}
```

"""  # Jinja drops one trailing newline: the card ends with one


@dataclass
class CardContent:
    """What a builder's dataset card says beyond the generated metadata."""

    pretty_name: str
    summary: str
    how_built: str
    source: str  # "paper" or "generate"
    seed: int | None = None
    extra_sections: dict[str, str] = field(default_factory=dict)


def _split_filename(config: str, split: str) -> str:
    return f"data/{config}/{split}-00000-of-00001.parquet"


def shard_bytes(folder: Path) -> dict[str, bytes]:
    """`{path in the folder: bytes}` of every Parquet shard, in the order the content hash takes them."""
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.glob("data/**/*.parquet"))}


def _digest(shards: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name, data in shards.items():
        digest.update(name.encode())
        digest.update(data)
    return digest.hexdigest()


def content_hash(folder: Path) -> str:
    """SHA-256 over the Parquet shards (names and bytes), identifying the data independent of the card."""
    return _digest(shard_bytes(folder))


def _shard_hashes(shards: dict[str, bytes]) -> dict[str, str]:
    """Each shard's own SHA-256, recorded so that a shard changed after the build can be named."""
    return {name: hashlib.sha256(data).hexdigest() for name, data in shards.items()}


def _changed_shard(recorded: dict[str, str] | None, shards: dict[str, bytes]) -> str:
    """Which shard makes the content hash differ, as the rest of a one-line error."""
    if recorded is None:  # a build from before per-shard hashes: a cut-off shard still shows as unreadable
        for name, data in shards.items():
            try:
                pq.read_metadata(pa.BufferReader(data))
            except pa.ArrowException:
                return f"{name} is not a readable Parquet file"
        return f"a shard under data/ is not the one {BUILD_INFO} hashed"
    actual = _shard_hashes(shards)
    if missing := sorted(set(recorded) - set(actual)):
        return f"{missing[0]} is missing"
    if extra := sorted(set(actual) - set(recorded)):
        return f"{extra[0]} is not part of the build"
    name = next(name for name in recorded if recorded[name] != actual[name])
    return f"{name} is not the file {BUILD_INFO} hashed (sha256 {actual[name][:12]}, built {recorded[name][:12]})"


def verified_shards(folder: Path) -> tuple[str, dict[str, bytes]]:
    """The build's content hash and its shards' bytes, read once and checked against `build_info.json`, so that the
    rows parsed from them are exactly the rows the hash names."""
    if not (folder / BUILD_INFO).is_file():
        raise LocalDatasetError(f"{folder}: no {BUILD_INFO}: not a dataset build, so its rows cannot be checked")
    build_info = read_json(folder / BUILD_INFO)
    shards = shard_bytes(folder)
    if _digest(shards) != build_info.get("content_hash"):
        problem = _changed_shard(build_info.get("shards"), shards)
        raise LocalDatasetError(f"{folder}: {problem}; rebuild the folder or restore the file")
    return build_info["content_hash"], shards


def _split_patterns(folder: Path, config: str) -> dict[str, list[str]]:
    """`{split: [path or glob]}` of `config` as the card's `configs:` lists them, in its order (`load_dataset`'s)."""
    card = folder / "README.md"
    metadata = (metadata_load(card) if card.is_file() else None) or {}
    entries = {entry.get("config_name"): entry for entry in metadata.get("configs") or [] if isinstance(entry, dict)}
    if config not in entries:
        raise LocalDatasetError(f"{card}: no config {config!r} (configs: {', '.join(map(str, entries)) or 'none'})")
    data_files = entries[config].get("data_files")
    if not isinstance(data_files, list) or not all(isinstance(item, dict) for item in data_files):
        raise LocalDatasetError(f"{card}: config {config!r} needs `data_files` as a list of split/path")
    return {
        item["split"]: [item["path"]] if isinstance(item["path"], str) else list(item["path"]) for item in data_files
    }


def load_build(folder: Path, config: str, split: str | None = None) -> datasets.Dataset | datasets.DatasetDict:
    """One split of a config of a local build (`split=None`: all its splits), parsed in memory from the verified shard
    bytes of the files the card names: no `datasets` cache is read or written; the fingerprint is the content's."""
    digest, shards = verified_shards(folder)
    patterns = _split_patterns(folder, config)
    if split is not None and split not in patterns:
        raise LocalDatasetError(f"{folder}: config {config!r} has no split {split!r} (splits: {', '.join(patterns)})")
    loaded = {}
    for name, globs in patterns.items():
        if split not in (None, name):
            continue
        parts = [data for path, data in shards.items() if any(fnmatch(path, glob) for glob in globs)]
        if not parts:
            raise LocalDatasetError(f"{folder}: no shard matches {globs[0]} ({config}/{name} in README.md)")
        table = pa.concat_tables(pq.read_table(pa.BufferReader(data)) for data in parts)
        fingerprint = Hasher.hash([digest, config, name])
        loaded[name] = datasets.Dataset(InMemoryTable(table), split=datasets.NamedSplit(name), fingerprint=fingerprint)
    return loaded[split] if split is not None else datasets.DatasetDict(loaded)


def dataset_card(
    card: CardContent, configs: dict[str, datasets.DatasetDict], default_config: str, digest: str
) -> DatasetCard:
    """The build's `huggingface_hub.DatasetCard`: `configs:` metadata naming each split's shard (what
    `load_dataset(folder, config)` reads), the configurations table, how it was built, the content hash, citation."""
    data = DatasetCardData(
        license="mit",
        language=["en"],
        pretty_name=card.pretty_name,
        task_categories=["text-generation"],
        tags=["reversal-curse", "reversal-hf"],
        configs=[
            {
                "config_name": name,
                "data_files": [{"split": split, "path": _split_filename(name, split)} for split in dsd],
                **({"default": True} if name == default_config else {}),
            }
            for name, dsd in configs.items()
        ],
    )
    rows = "\n".join(
        f"| `{name}` | {split} | {len(ds):,} | {', '.join(f'`{c}`' for c in ds.column_names)} |"
        for name, dsd in configs.items()
        for split, ds in dsd.items()
    )
    return DatasetCard.from_template(
        data,
        template_str=CARD_TEMPLATE,
        metadata=data.to_yaml(original_order=CARD_METADATA_ORDER),
        summary=card.summary.strip(),
        rows=rows,
        how_built=card.how_built.strip(),
        source=card.source,
        generator=f"reversal-hf {__version__}",
        seed="—" if card.seed is None else str(card.seed),
        digest=digest,
        sections="\n\n".join(f"## {title}\n\n{body.strip()}" for title, body in card.extra_sections.items()),
        paper_source=PAPER_SOURCE,
        citation=PAPER_CITATION,
    )


def check_output_dir(output: Path, overwrite: bool) -> None:
    """A build replaces `output` as a whole: only an empty folder or a previous build (its `build_info.json`) is
    replaced without `overwrite`, so that a mistyped `--output` never deletes a user's folder or file."""
    if overwrite or not (output.exists() or output.is_symlink()):
        return
    if not output.is_dir():
        raise DatasetBuildError(f"--output {output}: a file, not a dataset folder; pass --overwrite to replace it")
    try:
        replaceable = (output / BUILD_INFO).is_file() or not any(output.iterdir())
    except OSError as error:
        raise DatasetBuildError(f"--output {output}: cannot read the folder ({error.strerror})") from error
    if not replaceable:
        raise DatasetBuildError(
            f"--output {output}: a folder that is not a dataset build (no {BUILD_INFO}); pass --overwrite to replace it"
        )


def write_hub_dataset(
    output_dir: str | os.PathLike,
    configs: dict[str, datasets.DatasetDict],
    card: CardContent,
    default_config: str | None = None,
    extra_files: dict[str, str] | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write `configs` as Parquet shards plus a dataset card, replacing `output_dir` only once all is written.

    Parquet bytes are deterministic for the same rows, so the same inputs give a byte-identical folder.
    `extra_files` maps relative paths to text (e.g. a JSON system prompt) stored beside the card. `output_dir` must
    pass `check_output_dir`; a folder that cannot be written is a one-line `DatasetBuildError`, and leaves it as it was.
    """
    if not configs:
        raise DatasetBuildError("no configurations to write")
    output = Path(output_dir)
    check_output_dir(output, overwrite)
    try:
        _write_staged(output, configs, card, default_config, extra_files or {})
    except OSError as error:
        raise DatasetBuildError(f"--output {output}: cannot write there ({error.strerror or error})") from error
    return output


def _write_staged(
    output: Path,
    configs: dict[str, datasets.DatasetDict],
    card: CardContent,
    default_config: str | None,
    extra_files: dict[str, str],
) -> None:
    with staged_dir(output) as tmp:
        for name, dsd in configs.items():
            for split, ds in dsd.items():
                target = tmp / _split_filename(name, split)
                target.parent.mkdir(parents=True, exist_ok=True)
                ds.to_parquet(str(target))
        for rel, text in extra_files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text)
        shards = shard_bytes(tmp)
        digest = _digest(shards)
        default = default_config or next(iter(configs))
        (tmp / "README.md").write_text(str(dataset_card(card, configs, default, digest)))
        (tmp / BUILD_INFO).write_text(
            json.dumps(
                {
                    "generator": f"reversal-hf {__version__}",
                    "source": card.source,
                    "seed": card.seed,
                    "content_hash": digest,
                    "shards": _shard_hashes(shards),
                },
                indent=2,
            )
            + "\n"
        )
