"""Gather the wheels `bench/gpu_check.py` needs on a GPU machine without network (`make gpu-wheels`).

The GPU image has torch, accelerate, peft, huggingface_hub, tokenizers, safetensors, pyarrow, pandas, xxhash and the
like, but not trl, datasets, evaluate or deepspeed, and its transformers is older than ours. This downloads, for
CPython 3.12 on x86-64 Linux, exactly the versions installed here (the ones the code is tested with) of what it
lacks, builds deepspeed's wheel from its source package with every op left to JIT compilation, and fails if the set
is larger than what may travel with the working tree. The GPU machine then installs them with
`pip install --no-index --no-deps --target DIR`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

from reversal_hf.command import run_command
from reversal_hf.files import staged_dir
from reversal_hf.paths import REPO_ROOT

# What the GPU image lacks (or holds at another version) among our runtime needs and theirs:
# trl, datasets, evaluate, deepspeed themselves; transformers at our version; datasets' dill and multiprocess;
# deepspeed's hjson and pydantic (with pydantic's own three).
BINARY_WHEELS = (
    "trl",
    "datasets",
    "evaluate",
    "transformers",
    "dill",
    "multiprocess",
    "hjson",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
)
SOURCE_ONLY = ("deepspeed",)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
PYTHON_VERSION = "3.12"
# The travel limit is 64 MiB for the whole working tree; the rest of the repository takes about 6 MiB.
DEFAULT_LIMIT_MIB = 48


class WheelSetTooLarge(RuntimeError):
    """The gathered wheels would not fit beside the working tree on the GPU machine."""


def pip(*arguments: str, env: dict[str, str] | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", *arguments], check=True, env=env)


def download_wheels(folder: Path) -> None:
    """Binary wheels for CPython 3.12 on manylinux x86-64, pinned to the versions installed here."""
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    pins = [f"{name}=={version(name)}" for name in BINARY_WHEELS]
    pip(
        "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", PYTHON_VERSION,
        "--implementation", "cp", *platforms, "-d", str(folder), *pins,
    )  # fmt: skip


def build_source_wheels(folder: Path) -> None:
    """deepspeed ships only a source package: build a pure-Python wheel whose ops compile on first use (JIT)."""
    env = os.environ | {"DS_BUILD_OPS": "0", "DS_ACCELERATOR": "cuda"}
    with tempfile.TemporaryDirectory() as sources:
        pins = [f"{name}=={version(name)}" for name in SOURCE_ONLY]
        pip("download", "-q", "--no-deps", "--no-binary=:all:", "-d", sources, *pins)
        for archive in sorted(Path(sources).iterdir()):
            pip("wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(folder), str(archive), env=env)


def gather_wheels(output: Path, limit_mib: float) -> None:
    """Download and build every wheel into `output` (replaced only when all of them fit under `limit_mib`)."""
    with staged_dir(output) as staging:
        download_wheels(staging)
        build_source_wheels(staging)
        wheels = sorted(staging.glob("*.whl"))
        total_mib = sum(wheel.stat().st_size for wheel in wheels) / 2**20
        for wheel in wheels:
            print(f"{wheel.stat().st_size / 2**20:7.2f} MiB  {wheel.name}")
        print(f"{total_mib:7.2f} MiB  total ({len(wheels)} wheels, limit {limit_mib:g} MiB)")
        if total_mib > limit_mib:
            raise WheelSetTooLarge(f"the wheels take {total_mib:.1f} MiB, over --limit-mib {limit_mib:g}")


def describe_failure(error: Exception) -> str:
    if isinstance(error, subprocess.CalledProcessError):
        return f"`pip {error.cmd[3]}` failed (exit {error.returncode})"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO_ROOT / ".gpu_wheels", help="the (git-ignored) folder")
    parser.add_argument("--limit-mib", type=float, default=DEFAULT_LIMIT_MIB, help="fail above this total size")
    args = parser.parse_args(argv)
    return run_command(
        lambda: gather_wheels(args.output, args.limit_mib),
        (subprocess.CalledProcessError, WheelSetTooLarge),
        done=None,
        describe=describe_failure,
    )


if __name__ == "__main__":
    sys.exit(main())
