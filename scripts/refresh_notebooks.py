"""Re-execute every notebook in order and store its outputs (what nbval then compares).

    python scripts/refresh_notebooks.py              # all notebooks
    python scripts/refresh_notebooks.py 03 05        # only those whose name starts with 03 or 05

Each notebook runs top to bottom in a fresh kernel ("Restart kernel and run all"), with the
notebooks folder as working directory, on the database the course uses (PGQUEUE_LAB_DSN or the
embedded server, started once here and shared with the kernels).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from pgqueue_lab import db, embedded

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def _clean(nb: nbformat.NotebookNode) -> None:
    """Drop per-cell timing metadata, and keep only the last line of stored tracebacks: nbval
    compares neither, and a full traceback names files on the machine that ran the notebook."""
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                output["traceback"] = [f"{output['ename']}: {output['evalue']}"]


def refresh(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    start = time.monotonic()
    NotebookClient(
        nb,
        timeout=300,
        kernel_name="python3",
        record_timing=False,  # no per-cell timestamps: a refresh changes only what changed
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    _clean(nb)
    nbformat.write(nb, path)
    return time.monotonic() - start


def main(prefixes: list[str]) -> int:
    os.environ.setdefault(db.DSN_ENV, embedded.embedded_uri())
    paths = sorted(
        p for p in NOTEBOOKS.glob("[0-9][0-9]-*.ipynb") if not prefixes or p.name.startswith(tuple(prefixes))
    )
    if not paths:
        print("no notebook matched", file=sys.stderr)
        return 1
    for path in paths:
        print(f"{path.name}: executed in {refresh(path):.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
