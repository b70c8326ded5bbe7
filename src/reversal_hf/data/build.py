"""`reversal-hf build-data {exp1,exp2,exp3} ...`: the same CLIs as `datasets_scripts/build_exp*.py`."""

from __future__ import annotations

import importlib
import sys

EXPERIMENTS = ("exp1", "exp2", "exp3")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in EXPERIMENTS:
        print(f"usage: reversal-hf build-data {{{','.join(EXPERIMENTS)}}} [args]", file=sys.stderr)
        return 2
    return int(importlib.import_module(f"reversal_hf.data.{args[0]}").main(args[1:]) or 0)
