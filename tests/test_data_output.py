"""The dataset builders never destroy what they were not asked to replace, and fail in one line with nothing left over.

`--output` is replaced as a whole, so only an empty folder or a previous build is replaced without `--overwrite`; a
folder that cannot be written leaves it as it was and no `.tmp-*`/`.old-*` folder beside it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reversal_hf.data import exp1, exp2, exp3

BUILDERS = {"exp1": exp1.main, "exp2": exp2.main, "exp3": exp3.main}
PAPER = {"exp1": ["--source", "paper"], "exp2": [], "exp3": []}


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.mark.parametrize("builder", BUILDERS)
@pytest.mark.parametrize("kind", ["folder", "file"])
def test_an_output_that_is_no_build_is_refused(builder: str, kind: str, tmp_path: Path, capsys):
    output = tmp_path / "thesis"
    if kind == "folder":
        output.mkdir()
        (output / "chapter1.tex").write_text("months of work")
    else:
        output.write_text("months of work")
    assert BUILDERS[builder]([*PAPER[builder], "--output", str(output)]) == 1
    error = _one_error_line(capsys)
    assert error.startswith(f"error: --output {output}: ") and error.endswith("--overwrite to replace it")
    kept = output / "chapter1.tex" if kind == "folder" else output
    assert kept.read_text() == "months of work"
    assert _leftovers(output) == []


def test_overwrite_replaces_a_folder_that_is_no_build(tmp_path: Path, capsys):
    output = tmp_path / "scratch"
    output.mkdir()
    (output / "old.txt").write_text("disposable")
    assert exp1.main(["--source", "paper", "--output", str(output), "--overwrite"]) == 0
    assert (output / "build_info.json").is_file() and not (output / "old.txt").exists()


def test_an_empty_folder_and_a_previous_build_are_replaced(exp1_dataset_dir: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert exp2.main(["--output", str(empty)]) == 0
    previous = shutil.copytree(exp1_dataset_dir, tmp_path / "previous")
    assert exp1.main(["--source", "generate", "--seed", "3", "--output", str(previous)]) == 0
    assert '"seed": 3' in (previous / "build_info.json").read_text()
    assert _leftovers(empty) == [] and _leftovers(previous) == []


def test_an_uncreatable_output_is_one_line(tmp_path: Path, capsys):
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "reversal-exp3"
    assert exp3.main(["--output", str(output)]) == 1
    assert _one_error_line(capsys).startswith(f"error: --output {output}: cannot write there (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


@pytest.mark.parametrize("failing_rename", ["retire the old build", "move the new one in"])
def test_a_folder_that_cannot_be_replaced_stays_as_it_was(
    failing_rename: str, exp1_dataset_dir: Path, tmp_path: Path, monkeypatch, capsys
):
    """As a read-only folder does (renaming a folder needs write access to it; root ignores chmod, so the test makes
    the rename fail): one line, the old build intact, no `.old-*` or `.tmp-*` folder beside it."""
    output = shutil.copytree(exp1_dataset_dir, tmp_path / "reversal-exp1")
    before = {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()}
    rename = Path.rename

    def read_only_rename(self: Path, target):
        moving_in = Path(target) == output and self.name.startswith(f".{output.name}.tmp-")
        if (self == output) if failing_rename == "retire the old build" else moving_in:
            raise PermissionError(13, "Permission denied", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", read_only_rename)
    assert exp1.main(["--source", "generate", "--seed", "3", "--output", str(output)]) == 1
    assert _one_error_line(capsys) == f"error: --output {output}: cannot write there (Permission denied)"
    assert {p.relative_to(output): p.read_bytes() for p in output.rglob("*") if p.is_file()} == before
    assert _leftovers(output) == []


def test_a_names_file_that_is_not_utf8_is_one_line(tmp_path: Path, capsys):
    names = tmp_path / "names.txt"
    names.write_bytes("Daphne Barrington\nJos\xe9 Garc\xeda\n".encode("latin-1"))
    output = tmp_path / "out"
    assert exp1.main(["--source", "generate", "--names", str(names), "--output", str(output)]) == 1
    assert _one_error_line(capsys) == f"error: {names}:2: name file is not UTF-8 (byte 0xe9)"
    assert not output.exists()
