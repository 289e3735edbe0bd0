"""Notebooks are committed executed, top to bottom, so strict nbval has something to compare.

A notebook stored without outputs would pass nbval while testing nothing (cells with no
execution count are skipped); this test makes that a failure.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from pgqueue_lab import check

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]-*.ipynb"))
#: The exemption markers, each alone on its comment line (the reason goes on the next line).
EXEMPT_MARKERS = ("# NBVAL_IGNORE_OUTPUT", "# NBVAL_SKIP")
EXEMPT_TAGS = {"nbval-ignore-output", "nbval-skip"}
DOCS_HEADING = "## The PostgreSQL documentation for this notebook"


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
    """nbval 0.11 obeys a marker only on a comment line that is exactly the marker: the reason
    goes on the next line (``# NBVAL_IGNORE_OUTPUT - reason`` is silently ignored)."""
    cells = _code_cells(path)
    tagged = [c for c in cells if EXEMPT_TAGS & set(c.get("metadata", {}).get("tags", []))]
    assert not tagged, f"{path.name}: use a '# NBVAL_...' comment line, not a tag, to exempt a cell"
    exempt = []
    for cell in cells:
        lines = [line.strip() for line in cell.source.splitlines()]
        for n, line in enumerate(lines):
            if not line.startswith("#") or not line.lstrip("#").strip().startswith("NBVAL_"):
                continue
            assert line in EXEMPT_MARKERS, (
                f"{path.name}: {line!r}: nbval ignores a marker with anything else on its line; "
                "write the marker alone, the reason in a comment on the next line"
            )
            reason = lines[n + 1] if n + 1 < len(lines) else ""
            assert reason.startswith("#") and reason.lstrip("#").strip(), (
                f"{path.name}: {line!r} gives no reason: put it in a comment on the next line"
            )
            exempt.append(cell)
    assert len(exempt) * 4 <= len(cells), f"{path.name}: {len(exempt)} of {len(cells)} code cells exempt"


def _one_cell_notebook(path: Path, source: str) -> None:
    """A notebook of one code cell that prints "fresh", stored with the output "stale"."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(source, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="stale\n")]
    nb.cells = [cell]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_the_exemption_marker_takes_effect_only_alone_on_its_line(tmp_path: Path) -> None:
    """The form the notebooks use really exempts a cell under strict nbval (the one the check
    uses): a cell whose output differs passes with it, and fails without it or with the reason
    on the marker's line."""
    forms = {
        "alone": "# NBVAL_IGNORE_OUTPUT\n# the output changes on every run\nprint('fresh')",
        "none": "print('fresh')",
        "reason_on_its_line": "# NBVAL_IGNORE_OUTPUT - the output changes on every run\nprint('fresh')",
    }
    for name, source in forms.items():
        _one_cell_notebook(tmp_path / f"{name}.ipynb", source)
    args = check.pytest_args(sorted(tmp_path.glob("*.ipynb")), extra=["--color=no"])
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    out = result.stdout
    outcome = {name: "FAILED" if f"FAILED {name}.ipynb::Cell 0" in out else "passed" for name in forms}
    assert "1 passed" in out and "2 failed" in out, out[-3000:]
    # Both fail on their output (counted in the FAILURES section: how much of each message the
    # short summary repeats depends on the terminal's width).
    failures = out.split("short test summary info")[0]
    assert failures.count("assert reference_output == test_output failed") == 2, out[-3000:]
    assert outcome == {"alone": "passed", "none": "FAILED", "reason_on_its_line": "FAILED"}, out[-3000:]


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
    top = nb.cells[0].source
    assert re.search(r"\*\*Time:\*\* about \d+ minutes", top), f"{path.name}: no expected time at the top"
    assert "You will be able to" in top, f"{path.name}: no learning objectives at the top"
    docs = [c.source for c in nb.cells if c.cell_type == "markdown" and c.source.startswith(DOCS_HEADING)]
    assert len(docs) == 1 and "https://www.postgresql.org/docs/" in docs[0], (
        f"{path.name}: no '{DOCS_HEADING}' cell linking the manual"
    )


#: The widest stored output line a projector shows without wrapping (tables, printed results).
MAX_WIDTH = 100


def _statement_lines() -> set[str]:
    """Lines of the SQL constants the notebooks print as they are (code, not tables)."""
    from pgqueue_lab import bench, sql

    texts = [v for m in (sql, bench) for v in vars(m).values() if isinstance(v, str)]
    return {line.strip() for text in texts for line in text.splitlines()}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_stored_output_fits_a_projector(path: Path) -> None:
    """No table or printed line wider than MAX_WIDTH characters (a printed SQL constant aside)."""
    statements = _statement_lines()
    too_wide = []
    for n, cell in enumerate(_code_cells(path)):
        for output in cell.get("outputs", []):
            texts = [output.get("text", ""), output.get("data", {}).get("text/plain", "")]
            for text in texts:
                lines = text.splitlines() if isinstance(text, str) else "".join(text).splitlines()
                too_wide += [
                    f"code cell {n}: {len(line)} chars: {line[:60]}..."
                    for line in lines
                    if len(line) > MAX_WIDTH and line.strip() not in statements
                ]
    assert not too_wide, f"{path.name}: output too wide for a projector:\n" + "\n".join(too_wide)
