"""docs/ARCHITECTURE.md's Layout table, enforced: every module sits in the layer the table gives it, imports nothing
from a layer above, and no modules import each other in a cycle.

Every `import` and `from ... import` counts, a function-level one too: an import moved into a function to dodge a
cycle hides the cycle, it does not break it.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from reversal_hf.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "reversal_hf"
DOC = REPO_ROOT / "docs" / "ARCHITECTURE.md"
OUTSIDE_THE_PACKAGE = "–"  # the table's layer for what lives outside src/ (bench/)


def module_name(path: Path) -> str:
    """`data/exp1.py` → `data.exp1`; a package's `__init__.py` → the package (`""` for `reversal_hf` itself)."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layout_section(doc: str) -> str:
    return doc.split("## Layout", 1)[1].split("\n## ", 1)[0]


def layer_order(doc: str) -> list[list[str]]:
    """The layers lowest first, as the bold groups before the table list them ("**training, evaluation,
    publishing**"); a group answers to its own name and to each name in it."""
    groups = re.findall(r"\*\*([^*]+)\*\*", layout_section(doc).split("\n|", 1)[0])
    return [[group, *group.split(", ")] for group in groups]


def table_paths(cell: str) -> list[str]:
    """The package paths a Layout row names: backticked names outside parentheses, a bare name relative to the folder
    of the path before it (`data/exp1_schema.py`, `exp1_paper.py` → `data/exp1_paper.py`)."""
    named, folder = [], ""
    for token in re.findall(r"`([^`]+)`", re.sub(r"\([^)]*\)", "", cell)):
        path = token if "/" in token.rstrip("/") else folder + token
        folder = path.rstrip("/").rpartition("/")[0] + "/" if "/" in path.rstrip("/") else folder
        named.append(path)
    return named


@cache
def documented_layers() -> dict[str, int]:
    """Each module and package folder the Layout table names (`data.exp1`, `openai_arm/` as `openai_arm`), with its
    layer's index."""
    doc = DOC.read_text()
    order = layer_order(doc)
    placed: dict[str, int] = {}
    for line in layout_section(doc).splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[0] in ("layer", OUTSIDE_THE_PACKAGE) or set(cells[0]) <= {"-"}:
            continue
        index = next((i for i, names in enumerate(order) if cells[0] in names), None)
        assert index is not None, f"docs/ARCHITECTURE.md: layer {cells[0]!r} is not in the layer order"
        for path in table_paths(cells[1]):
            assert (PACKAGE / path).exists(), f"docs/ARCHITECTURE.md names {path}, which src/reversal_hf lacks"
            placed[path.removesuffix("/").removesuffix(".py").replace("/", ".")] = index
    return placed


def layer_of(module: str) -> int:
    """The layer of the module, or of the closest package folder the table names; a package's `__init__` takes the
    lowest layer among its documented modules (`data` holds only data modules, `""` is base)."""
    placed = documented_layers()
    parts = module.split(".") if module else []
    for length in range(len(parts), 0, -1):
        if ".".join(parts[:length]) in placed:
            return placed[".".join(parts[:length])]
    inside = [layer for name, layer in placed.items() if module == "" or name.startswith(module + ".")]
    assert inside, f"{module}: not in docs/ARCHITECTURE.md's Layout table (add it to the layer it belongs to)"
    return min(inside)


def imports(path: Path, known: set[str]) -> dict[str, int]:
    """The package modules `path` imports, each with the line of its first import: every Import/ImportFrom node,
    a function-level one too. `from reversal_hf.a import b` names `a.b` where that is a module, else `a`."""
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "reversal_hf":
            base = node.module.removeprefix("reversal_hf").lstrip(".")
            names = [".".join(filter(None, (base, alias.name))) for alias in node.names]
            targets = [name if name in known else base for name in names]
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("reversal_hf.") for a in node.names if a.name.startswith("reversal_hf.")]
        else:
            continue
        for target in targets:
            found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    known = modules()
    return {module: imports(path, set(known)) for module, path in known.items()}


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_the_layout_table() -> None:
    for module in modules():
        layer_of(module)


def test_no_module_imports_one_above_it() -> None:
    violations = [
        f"{module} (line {line}) imports {target}"
        for module, targets in import_graph().items()
        for target, line in targets.items()
        if target != "__version__" and layer_of(target) > layer_of(module)
    ]
    assert not violations, violations


def test_no_import_cycle() -> None:
    graph = import_graph()
    found = [
        " ; ".join(f"{a} -> {b} (line {graph[a][b]})" for a in component for b in component if b in graph[a])
        for component in cycles(graph)
    ]
    assert not found, found


def test_the_cycle_check_sees_function_level_imports(tmp_path: Path) -> None:
    """The check itself: a cycle closed by an import inside a function is a cycle."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from reversal_hf.evaluation import exp1\n")
    graph = {"lazy": imports(module, {"evaluation.exp1"}), "evaluation.exp1": {"lazy": 1}}
    assert cycles(graph) == [["evaluation.exp1", "lazy"]]
