"""Print the measured figures of notebooks 15-17, which the notebooks only plot.

    python scripts/notebook_figures.py 15     # buffers per claim, dead rows, snapshot age
    python scripts/notebook_figures.py 16     # table and index sizes, jobs/s, buffers
    python scripts/notebook_figures.py 17     # commits/s with and without NOTIFY

Runs the notebook's code cells up to its measurement (in this process, in the notebooks
folder, on the database the course uses: PGQUEUE_LAB_DSN or the embedded server), prints the
numbers, and drops the notebook's schemas.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any

import matplotlib
import nbformat

from pgqueue_lab import db, embedded

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
#: The cell after which each notebook has measured everything this script prints.
STOP_AFTER = {"15": "runs, plans = {}", "16": "after = measure()", "17": "rates = pd.DataFrame(rows)"}


def measure(number: str) -> dict[str, Any]:
    [path] = NOTEBOOKS.glob(f"{number}-*.ipynb")
    cells = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    scope: dict[str, Any] = {}
    os.chdir(NOTEBOOKS)
    with contextlib.redirect_stdout(io.StringIO()):
        for source in cells:
            exec(source, scope)
            if STOP_AFTER[number] in source:
                break
    return scope


def main(number: str) -> int:
    if number not in STOP_AFTER:
        print(f"notebook {number!r} has no figures here; choose one of {sorted(STOP_AFTER)}", file=sys.stderr)
        return 2
    matplotlib.use("Agg")
    os.environ.setdefault(db.DSN_ENV, embedded.embedded_uri())
    g = measure(number)
    if number == "15":
        print("snapshot held, [(jobs claimed, buffers of the claim's index scan, dead rows after")
        print("  VACUUM, ms of the index scan, oldest snapshot's age)]")
        for held in (False, True):
            points = [
                (p["claimed"], p["buffers"], p["dead_rows"], round(p["ms"], 3), p["snapshot_age"])
                for p in g["runs"][held]
            ]
            print(held, points)
        g["queue"].drop(g["conn"])
    elif number == "16":
        results = g["results"]
        for value in ("table", "indexes"):
            print(f"{value} (bytes), first and last round:")
            print(results.pivot(index="finished", columns="strategy", values=value).iloc[[0, -1]].to_string())
        print(
            "median jobs/s per strategy:", results.groupby("strategy")["jobs/s"].median().round(0).to_dict()
        )
        print("buffers with 4000 finished rows:", g["before"], "with 100 000 more:", g["after"])
        for queue in g["queues"].values():
            queue.drop(g["conn"])
    else:
        pivot = g["rates"].pivot(index="producers", columns="notify", values="commits/s").round(0)
        pivot["with/without"] = (pivot[True] / pivot[False]).round(2)
        print("commits/s, one job per transaction (notify True: with NOTIFY)")
        print(pivot.to_string())
        g["queue"].drop(g["conn"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else ""))
