"""Where things live: the repository's vendored paper data and the local build/cache folders."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PAPER_DATA_DIR = Path(os.environ.get("REVERSAL_HF_PAPER_DATA", REPO_ROOT / "data" / "paper"))
BUILD_DIR = Path(os.environ.get("REVERSAL_HF_BUILD", REPO_ROOT / "build"))
DATASETS_DIR = BUILD_DIR / "datasets"
MODELS_DIR = Path(os.environ.get("REVERSAL_HF_MODELS", BUILD_DIR / "models"))
