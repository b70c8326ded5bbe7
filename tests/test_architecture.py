"""docs/ARCHITECTURE.md's layering, enforced: no module imports one above it.

data ← models/configs/run folder ← train/launch/evaluation/publishing ← reporting ← reproduce/mitigate/cli
"""

from __future__ import annotations

import ast
from pathlib import Path

from reversal_hf.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "reversal_hf"
# Lowest layer first; a module's layer is that of the longest prefix listed.
LAYERS: list[tuple[str, ...]] = [
    ("", "paths", "files", "precision", "paper_numbers", "metrics", "statistics", "collators", "openai_api"),
    ("data",),
    ("models", "configs", "run_folder", "truncation"),
    ("train", "mlm_u", "launch", "sweep", "evaluation", "model_card", "hub", "openai_arm"),
    ("reporting",),
    ("reproduce", "mitigate", "cli"),
]


def layer_of(module: str) -> int:
    parts = module.split(".")
    for length in range(len(parts), -1, -1):
        prefix = ".".join(parts[:length])
        for index, names in enumerate(LAYERS):
            if prefix in names:
                return index
    raise AssertionError(f"{module}: not in LAYERS (add it to the layer it belongs to)")


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reversal_hf":
            base = node.module.removeprefix("reversal_hf").lstrip(".")
            found |= {f"{base}.{alias.name}".lstrip(".") for alias in node.names} if not base else {base}
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("reversal_hf.") for a in node.names if a.name.startswith("reversal_hf.")}
    return found


def test_no_module_imports_one_above_it() -> None:
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix("__init__").rstrip(".")
        for imported in imports(path):
            if imported == "__version__":
                continue
            if layer_of(imported) > layer_of(module):
                violations.append(f"{module} imports {imported}")
    assert not violations, violations
