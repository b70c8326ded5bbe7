"""What the dataset commands' `main`s share: the config list and the input/output options (they end through
`reversal_hf.command.run_command`, as every command does)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Sequence
from pathlib import Path

from reversal_hf.data.hub_layout import DatasetBuildError


def check_configs(names: Iterable[str], known: Sequence[str]) -> None:
    """Refuse the first of `names` that is not one of the `known` configs."""
    unknown = [name for name in names if name not in known]
    if unknown:
        raise DatasetBuildError(f"unknown config {unknown[0]!r} (choose from {', '.join(known)})")


def parse_configs(names: Sequence[str], known: Sequence[str]) -> tuple[str, ...]:
    """The configs named in `names`, each once, in the order of `known`."""
    check_configs(names, known)
    return tuple(name for name in known if name in names)


def add_input_output_arguments(
    parser: argparse.ArgumentParser, configs: Sequence[str], data_dir: Path, output: Path
) -> argparse.ArgumentParser:
    """`--configs`, `--data-dir` (the paper's files) and `--output` (the dataset folder), with these defaults."""
    parser.add_argument("--configs", nargs="+", default=list(configs), help=f"configs to build: {', '.join(configs)}")
    parser.add_argument("--data-dir", type=Path, default=data_dir, help="the paper's files (default: %(default)s)")
    add_output_arguments(parser, output)
    return parser


def add_output_arguments(parser: argparse.ArgumentParser, output: Path) -> None:
    """`--output`, the dataset folder (replaced as a whole), and `--overwrite` (`hub_layout.check_output_dir`)."""
    parser.add_argument("--output", type=Path, default=output, help="dataset folder to write (default: %(default)s)")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --output even when it is not empty and not a dataset build"
    )
