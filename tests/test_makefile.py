"""The Makefile passes `RUN`, `OUT` and `HUB_ORG` on as one argument each, whatever they hold.

`make` runs with its prerequisites taken as up to date (`-o`) and `BIN` pointing at stand-ins for `python` and
`reversal-hf` that print their arguments, one per line: nothing is built, trained or pushed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reversal_hf.paths import REPO_ROOT

UP_TO_DATE = [".venv/.installed", *(f"build/datasets/reversal-exp{n}" for n in (1, 2, 3))]
ECHO_ARGS = '#!/bin/sh\nfor arg in "$@"; do printf "%s\\n" "$arg"; done\n'


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("python", "reversal-hf"):
        (folder / name).write_text(ECHO_ARGS)
        (folder / name).chmod(0o755)
    return folder


def _make(target: str, fake_bin: Path, cwd: Path, **variables: str) -> list[str]:
    up_to_date = [arg for path in UP_TO_DATE for arg in ("-o", path)]
    assigned = [f"{name}={value}" for name, value in variables.items()]
    command = ["make", "-s", "-C", str(REPO_ROOT), *up_to_date, f"BIN={fake_bin}", target, *assigned]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_variables_reach_the_commands_as_one_argument(fake_bin: Path, tmp_path: Path):
    weird = f"my folder's; touch {tmp_path / 'pwned'}"  # a space, a quote, and a command should it reach a shell
    assert _make("eval", fake_bin, tmp_path, RUN=weird) == ["eval", "run", weird]
    assert _make("reproduce", fake_bin, tmp_path, OUT=weird)[-2:] == ["--output", weird]
    pushes = _make("push-data", fake_bin, tmp_path, HUB_ORG=weird)
    assert [pushes[i + 1] for i, arg in enumerate(pushes) if arg == "--repo-id"] == [
        f"{weird}/reversal-exp{n}" for n in (1, 2, 3)
    ]
    assert not (tmp_path / "pwned").exists()
