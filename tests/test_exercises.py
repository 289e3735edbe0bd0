"""Every exercise's folded solution passes its own check (slow: runs every notebook again).

A notebook's exercise has an answer cell (``name = None``), a check cell after it, and a
solution folded in ``<details>``. This test puts each solution in place of its answer cell,
runs the notebook top to bottom in a fresh kernel, and requires the check to say so. Marked
``exercises`` (about a minute and a half): ``pytest -m exercises tests/test_exercises.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]-*.ipynb"))
#: What a check prints when the answer is right (each check's own wording starts so).
PASSED = re.compile(r"^(Correct\b|correct: True|exactly one worker took the job: True)", re.MULTILINE)

pytestmark = pytest.mark.exercises


def _solutions(nb: nbformat.NotebookNode) -> list[str]:
    folded = [c.source for c in nb.cells if c.cell_type == "markdown" and "<details>" in c.source]
    return [block for text in folded for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL)]


def _answer_cell(nb: nbformat.NotebookNode, solution: str) -> int:
    """The code cell that assigns None to the names the solution defines."""
    names = set(re.findall(r"^(\w+) = ", solution, re.M)) | set(re.findall(r"^def (\w+)\(", solution, re.M))
    for i, cell in enumerate(nb.cells):
        blanks = set(re.findall(r"^(\w+) = None\b", cell.source, re.M))
        if cell.cell_type == "code" and blanks and blanks <= names:
            return i
    raise AssertionError(f"no answer cell for the solution defining {sorted(names)}")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_each_folded_solution_passes_its_check(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    answered = []
    for solution in _solutions(nb):
        i = _answer_cell(nb, solution)
        nb.cells[i].source = solution
        answered.append(i)
    assert answered, f"{path.name}: no exercise with a folded solution"
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    for i in answered:
        check = next(c for c in nb.cells[i + 1 :] if c.cell_type == "code")
        text = "".join(o.get("text", "") for o in check.outputs if o.output_type == "stream")
        assert PASSED.search(text), f"{path.name}: the solution in cell {i} does not pass its check:\n{text}"
