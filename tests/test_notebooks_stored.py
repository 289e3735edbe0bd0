"""Notebooks are committed executed, top to bottom, so strict nbval has something to compare.

A notebook stored without outputs would pass nbval while testing nothing (cells with no
execution count are skipped); this test makes that a failure.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]-*.ipynb"))
EXEMPT_MARKERS = ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP")
EXEMPT_TAGS = {"nbval-ignore-output", "nbval-skip"}


def _code_cells(path: Path) -> list[nbformat.NotebookNode]:
    return [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS, "no notebooks/NN-topic.ipynb found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_executed_in_order(path: Path) -> None:
    cells = _code_cells(path)
    counts = [c.get("execution_count") for c in cells]
    assert None not in counts, f"{path.name}: unexecuted cells; run scripts/refresh_notebooks.py"
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: cells not run top to bottom once: {counts}"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_at_most_one_cell_in_four_is_exempt_and_each_says_why(path: Path) -> None:
    cells = _code_cells(path)
    tagged = [c for c in cells if EXEMPT_TAGS & set(c.get("metadata", {}).get("tags", []))]
    exempt = [c for c in cells if any(m in c.source for m in EXEMPT_MARKERS)]
    assert not tagged, f"{path.name}: use a '# NBVAL_... - reason' comment, not a tag, to exempt a cell"
    assert len(exempt) * 4 <= len(cells), f"{path.name}: {len(exempt)} of {len(cells)} code cells exempt"
    for cell in exempt:
        marker_line = next(
            line for line in cell.source.splitlines() if line.strip().startswith(EXEMPT_MARKERS)
        )
        rest = marker_line.split(None, 2)[2:] if marker_line.count(" ") >= 2 else []
        assert rest and rest[0].strip(" -:"), f"{path.name}: {marker_line!r} gives no reason"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_outputs_name_no_machine_paths(path: Path) -> None:
    text = path.read_text()
    for marker in ("site-packages", "/tmp/", "/root/", "/home/", "/var/lib/"):
        assert marker not in text, f"{path.name}: stored output mentions {marker!r}; refresh it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_teaches(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown").lower()
    assert nb.cells[0].cell_type == "markdown", f"{path.name}: start with a Markdown title"
    assert "exercise" in markdown, f"{path.name}: no exercise"
    assert "what you learned" in markdown, f"{path.name}: no 'What you learned' summary"
