"""The `evaluate` metric modules shipped with the package, as paths for `evaluate.load(path)`."""

from __future__ import annotations

from pathlib import Path

REVERSAL_ACCURACY = str(Path(__file__).resolve().parent / "reversal_accuracy")

__all__ = ["REVERSAL_ACCURACY"]
