"""Reading and writing the project's files: one-line errors on bad input, nothing half-written on disk."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


class FileFormatError(ValueError):
    """A JSON or YAML file is missing, unparsable or not the expected shape; the message is one line naming it."""


def read_json(path: str | Path, *, expect: type | None = dict) -> Any:
    """Parse a JSON file; `expect` (default: an object) is checked, `None` accepts any value."""
    return _read(path, json.loads, json.JSONDecodeError, _json_error, "a JSON", expect)


def read_yaml(path: str | Path, *, expect: type | None = dict) -> Any:
    """Parse a YAML file; `expect` (default: a mapping) is checked, `None` accepts any value."""
    return _read(path, yaml.safe_load, yaml.YAMLError, _yaml_error, "a YAML", expect)


def _json_error(error: json.JSONDecodeError) -> str:
    return f"not valid JSON ({error.msg} at line {error.lineno})"


def _yaml_error(error: yaml.YAMLError) -> str:
    return f"invalid YAML ({str(error).splitlines()[0]})"


def _read(
    path: str | Path,
    parse: Callable[[str], Any],
    parse_error: type[Exception],
    describe: Callable[[Any], str],
    kind: str,
    expect: type | None,
) -> Any:
    """Parse `path`'s text with `parse`; a missing file or a `parse_error` becomes a one-line `FileFormatError`."""
    path = Path(path)
    try:
        value = parse(path.read_text())
    except FileNotFoundError as error:
        raise FileFormatError(f"{path}: no such file") from error
    except parse_error as error:
        raise FileFormatError(f"{path}: {describe(error)}") from error
    return _checked(path, value, expect, kind)


def _checked(path: Path, value: Any, expect: type | None, kind: str) -> Any:
    if expect is not None and not isinstance(value, expect):
        shape = "mapping" if expect is dict else expect.__name__
        raise FileFormatError(f"{path}: expected {kind} {shape}, found {type(value).__name__}")
    return value


def write_atomically(path: str | Path, write: Callable[[Path], None]) -> None:
    """`write` a temporary file beside `path`, then rename it into place: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(tmp_name))
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Atomically replace `path` with `text`."""
    write_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, payload: Any) -> None:
    """Atomically write strict, indented JSON (NaN and infinities become null)."""
    write_text(path, json.dumps(json_safe(payload), indent=2, default=str) + "\n")


def json_safe(value: Any) -> Any:
    """NaN and infinities (e.g. an undefined t-test) as None, so the file stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


@contextmanager
def staged_dir(output_dir: str | Path, *, merge: bool = False) -> Iterator[Path]:
    """Yield an empty folder beside `output_dir` that takes its place only once the block succeeds.

    `merge=False` replaces the whole folder; `merge=True` moves the staged files into it, keeping other files.
    """
    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        yield staging
        if merge:
            output_dir.mkdir(exist_ok=True)
            for path in staging.iterdir():
                target = output_dir / path.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(path, target)
        elif output_dir.exists() or output_dir.is_symlink():
            _swap(staging, output_dir)
        else:
            staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap(staging: Path, output_dir: Path) -> None:
    """Put `staging` in place of `output_dir`; if either rename fails, `output_dir` is left as it was and no
    `.old-*` folder stays behind."""
    retired = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.old-", dir=output_dir.parent))
    try:
        output_dir.rename(retired / output_dir.name)
    except BaseException:
        retired.rmdir()
        raise
    try:
        staging.rename(output_dir)
    except BaseException:
        (retired / output_dir.name).rename(output_dir)
        retired.rmdir()
        raise
    shutil.rmtree(retired)
