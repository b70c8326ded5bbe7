"""files.py: one-line errors on bad JSON/YAML, atomic writes that leave nothing half-written."""

from __future__ import annotations

import math

import pytest

from reversal_hf.files import FileFormatError, read_json, read_yaml, staged_dir, write_json, write_text


def test_read_errors_are_one_line_and_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(FileFormatError, match=r"bad\.json: not valid JSON") as caught:
        read_json(bad)
    assert "\n" not in str(caught.value)
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(FileFormatError, match=r"list\.yaml: expected a YAML mapping, found list"):
        read_yaml(tmp_path / "list.yaml")
    assert read_yaml(tmp_path / "list.yaml", expect=None) == ["a", "b"]
    with pytest.raises(FileFormatError, match="no such file"):
        read_json(tmp_path / "missing.json")


def test_write_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "sub" / "m.json"
    write_json(path, {"p": math.nan, "xs": [1.0, math.inf]})
    assert read_json(path) == {"p": None, "xs": [1.0, None]}
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]


def test_staged_dir_replaces_only_on_success(tmp_path):
    out = tmp_path / "out"
    write_text(out / "old.txt", "old")
    with pytest.raises(RuntimeError), staged_dir(out) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (out / "old.txt").read_text() == "old"
    with staged_dir(out, merge=True) as staging:
        (staging / "new.txt").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["new.txt", "old.txt"]
    with staged_dir(out) as staging:
        (staging / "only.txt").write_text("x")
    assert sorted(p.name for p in out.iterdir()) == ["only.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
