"""The package's layout: layers that import only downwards, no import cycles, a core that fits
a sitting.

Read with :mod:`ast`, not by importing: every ``import`` and ``from ... import`` of a module
counts, those under ``if TYPE_CHECKING:`` and inside functions included. (Importing
``pgqueue_lab.core.queue`` also runs ``pgqueue_lab/__init__.py`` first, as Python imports a
package before its modules; that is not an import *statement* of the core and is not counted.)

``python tests/test_layout.py`` prints the layers, each file with its line count, and the
longest chain of imports.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pgqueue_lab"

#: The layers, lowest first: a module may import from its own layer and the ones before it.
LAYERS = (
    ("pgqueue_lab.errors", "pgqueue_lab._version"),
    ("pgqueue_lab.embedded",),
    ("pgqueue_lab.core",),
    ("pgqueue_lab.features",),
    ("pgqueue_lab.bench",),
    ("pgqueue_lab.tools",),
    ("pgqueue_lab", "pgqueue_lab.__main__"),  # the public face, and python -m pgqueue_lab
)

#: The core a learner reads in one sitting (docstrings included), with the errors it raises.
CORE_FILES = (
    "pgqueue_lab/errors.py",
    *(f"pgqueue_lab/core/{p.name}" for p in (PACKAGE / "core").glob("*.py")),
)
CORE_BUDGET = 2500
#: The statements of notebooks 00-08, top to bottom in one file.
CORE_SQL, CORE_SQL_BUDGET = PACKAGE / "core" / "sql.py", 400


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: Path) -> dict[str, Path]:
    """Every module of ``package`` (a folder), by dotted name."""
    return {module_name(p, package): p for p in sorted(package.rglob("*.py"))}


def imports(path: Path, name: str, known: Iterable[str]) -> set[str]:
    """The modules of the package that the module ``name`` (at ``path``) imports, anywhere in it."""
    known = set(known)
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import x``, mod
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # import a.b.c of a module: a.b.c, else a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph(package: Path) -> dict[str, set[str]]:
    mods = modules(package)
    return {name: imports(path, name, mods) for name, path in mods.items()}


def layer(name: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int:
    """The index of the layer a module belongs to (the longest matching prefix decides)."""
    best, rank = -1, -1
    for i, prefixes in enumerate(layers):
        for prefix in prefixes:
            exact_face = prefix in ("pgqueue_lab", "pgqueue_lab.__main__")
            matches = name == prefix or (not exact_face and name.startswith(prefix + "."))
            if matches and len(prefix) > best:
                best, rank = len(prefix), i
    if rank < 0:
        raise AssertionError(f"{name} belongs to no layer: add it to LAYERS in tests/test_layout.py")
    return rank


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles (strongly connected components of more than one module, or a module
    importing itself), each as a sorted list; Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def upward(edges: dict[str, set[str]], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """Imports that run from a lower layer to a higher one, as ``"a -> b"``."""
    return sorted(
        f"{src} -> {dst}"
        for src, targets in edges.items()
        for dst in targets
        if layer(dst, layers) > layer(src, layers)
    )


def longest_chain(edges: dict[str, set[str]]) -> list[str]:
    """The longest path of imports (the graph has no cycle)."""
    memo: dict[str, list[str]] = {}

    def walk(node: str) -> list[str]:
        if node not in memo:
            best = max((walk(n) for n in sorted(edges.get(node, ()))), key=len, default=[])
            memo[node] = [node, *best]
        return memo[node]

    return max((walk(n) for n in sorted(edges)), key=len)


def lines(relative: str) -> int:
    return len((ROOT / relative).read_text(encoding="utf-8").splitlines())


# -- the package -------------------------------------------------------------------------------


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(graph(PACKAGE)) == []


def test_no_module_imports_from_a_higher_layer() -> None:
    edges = graph(PACKAGE)
    assert upward(edges) == []
    # the core's own promise, spelt out: it imports no feature, tool or benchmark
    core = {src: targets for src, targets in edges.items() if layer(src) <= layer("pgqueue_lab.core")}
    above = [
        f"{s} -> {t}" for s, targets in core.items() for t in targets if layer(t) > layer("pgqueue_lab.core")
    ]
    assert above == []


def test_the_core_fits_its_budget() -> None:
    total = sum(lines(f) for f in CORE_FILES)
    assert total <= CORE_BUDGET, f"the core is {total} lines, over its budget of {CORE_BUDGET}"
    sql_lines = len(CORE_SQL.read_text(encoding="utf-8").splitlines())
    assert sql_lines <= CORE_SQL_BUDGET, f"core/sql.py is {sql_lines} lines, over {CORE_SQL_BUDGET}"


def test_the_first_nine_notebooks_print_only_the_cores_statements() -> None:
    """What notebooks 00-08 print as ``sql.NAME`` is defined in core/sql.py, so a learner reads
    the statements of the course's first part top to bottom in that one file."""
    defined = set(re.findall(r"^([A-Z][A-Z_]*) = ", CORE_SQL.read_text(encoding="utf-8"), re.M))
    used: dict[str, set[str]] = {}
    for path in sorted((ROOT / "notebooks").glob("0[0-8]-*.ipynb")):
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        for cell in cells:
            for name in re.findall(r"\bsql\.([A-Z][A-Z_]*)\b", "".join(cell["source"])):
                used.setdefault(name, set()).add(path.name)
    assert len(used) >= 10, "the notebooks print the queue's statements"
    missing = {name: sorted(where) for name, where in used.items() if name not in defined}
    assert missing == {}


def test_every_module_is_in_a_layer() -> None:
    for name in graph(PACKAGE):
        layer(name)


# -- the checks themselves can fail ------------------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pgqueue_lab"
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def test_the_checks_find_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    package = _package(
        tmp_path,
        {
            "__init__.py": "",
            "errors.py": "",
            "core/__init__.py": "",
            "core/queue.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..features import limits\n"
            ),
            "features/__init__.py": "",
            "features/limits.py": "def f():\n    from ..core.queue import Queue\n",
            "tools/__init__.py": "",
            "tools/cli.py": "from pgqueue_lab.core import queue\nfrom .. import errors\n",
        },
    )
    edges = graph(package)
    assert edges["pgqueue_lab.core.queue"] == {"pgqueue_lab.features.limits"}
    assert edges["pgqueue_lab.tools.cli"] == {"pgqueue_lab.core.queue", "pgqueue_lab.errors"}
    assert cycles(edges) == [["pgqueue_lab.core.queue", "pgqueue_lab.features.limits"]]
    assert upward(edges) == ["pgqueue_lab.core.queue -> pgqueue_lab.features.limits"]
    with pytest.raises(AssertionError, match="belongs to no layer"):
        layer("pgqueue_lab.plugins.x")


def test_the_longest_chain_follows_the_imports() -> None:
    edges = {"a": {"b", "c"}, "b": {"c"}, "c": {"d"}, "d": set()}
    assert longest_chain(edges) == ["a", "b", "c", "d"]


def report() -> str:
    edges = graph(PACKAGE)
    mods = modules(PACKAGE)
    out = []
    for i, prefixes in enumerate(LAYERS):
        members = [n for n in mods if layer(n) == i]
        total = sum(lines(str(mods[n].relative_to(ROOT))) for n in members)
        out.append(f"layer {i} ({', '.join(prefixes)}): {len(members)} files, {total} lines")
        for n in members:
            out.append(f"    {lines(str(mods[n].relative_to(ROOT))):5d}  {mods[n].relative_to(ROOT)}")
    core = sum(lines(f) for f in CORE_FILES)
    out.append(
        f"core + errors: {core} lines (budget {CORE_BUDGET}); core/sql.py: {lines('pgqueue_lab/core/sql.py')}"
    )
    chain = longest_chain(edges)
    out.append(f"longest import chain ({len(chain)} modules): " + " -> ".join(chain))
    out.append(f"cycles: {cycles(edges)}; upward imports: {upward(edges)}")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(report() + "\n")
