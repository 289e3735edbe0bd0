"""``pgqueue-lab check``: run notebooks under strict nbval, as this project's own tests do.

The command a teacher puts in their CI to validate their copy of the course: every code cell
is run in a fresh kernel (the current Python environment, working directory = the notebook's
folder) and its output compared with the stored one, after the packaged sanitiser
(``pgqueue_lab/nbval-sanitize.cfg``). It exits non-zero on any difference, and names the cells.

It needs no checkout: pytest is pointed at a packaged ini file (``-c``, so no
``pytest.ini``/``pyproject.toml`` around the notebooks applies), the course folder is its
rootdir, and the plugin :mod:`pgqueue_lab.tools.pytest_plugin` does what this repository's
``conftest.py`` does: the database is ``PGQUEUE_LAB_DSN`` if set, else the embedded server,
started once in the pytest process with its DSN exported to the kernels.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from ..errors import CourseError
from .course import DEFAULT_DIR

PACKAGE_DIR = Path(__file__).resolve().parent
#: The sanitiser nbval applies to stored and fresh output alike (also used by this repo's tests).
SANITIZER = PACKAGE_DIR / "nbval-sanitize.cfg"
#: pytest's configuration for ``check``: stands in for a project's ``pytest.ini``.
PYTEST_INI = PACKAGE_DIR / "check-pytest.ini"
#: Strict nbval in the current environment (the same options as ``addopts`` in pyproject.toml).
NBVAL_OPTIONS = ("--nbval", "--nbval-current-env")
DEFAULT_CELL_TIMEOUT = 120
#: What ``check`` needs beyond the package itself: the ``test`` extra.
NEEDS = ("pytest", "nbval", "ipykernel")


def _is_notebook(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("cells"), list)


def notebooks(paths: Sequence[str]) -> list[Path]:
    """Resolve folders and notebook files to the notebooks to run, in order, without repeats.

    A folder stands for the ``*.ipynb`` files directly in it, sorted by name.

    :raises CourseError: a path does not exist, is not a notebook, or a folder holds none.
    """
    if not paths:
        if not Path(DEFAULT_DIR).is_dir():
            raise CourseError(
                f"No course folder ./{DEFAULT_DIR} here: give the folder or notebooks to check, "
                "e.g. pgqueue-lab check path/to/course"
            )
        paths = [DEFAULT_DIR]
    found: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            in_dir = sorted(p for p in path.glob("*.ipynb") if p.is_file())
            if not in_dir:
                raise CourseError(f"{given}: no notebooks (*.ipynb) in this folder")
            candidates = in_dir
        elif not path.exists():
            raise CourseError(f"{given}: no such file or folder")
        elif path.suffix != ".ipynb":
            raise CourseError(f"{given}: not a notebook (give .ipynb files or folders of them)")
        else:
            candidates = [path]
        for candidate in candidates:
            if not _is_notebook(candidate):
                raise CourseError(f"{candidate}: not a Jupyter notebook (it does not read as one)")
            resolved = candidate.resolve()
            if resolved not in found:
                found.append(resolved)
    return found


def pytest_args(
    nbs: Sequence[Path],
    *,
    cell_timeout: float = DEFAULT_CELL_TIMEOUT,
    sanitizer: Path = SANITIZER,
    extra: Sequence[str] = (),
) -> list[str]:
    """The pytest command line (without ``pytest``) that checks ``nbs`` under strict nbval."""
    root = Path(os.path.commonpath([str(nb.parent) for nb in nbs]))
    return [
        "-c",
        str(PYTEST_INI),
        "--rootdir",
        str(root),
        "--confcutdir",
        str(root),  # a conftest.py in the course folder applies; none above it
        "-p",
        "pgqueue_lab.tools.pytest_plugin",
        "-p",
        "no:cacheprovider",  # no .pytest_cache in the learner's folder
        "-ra",
        *NBVAL_OPTIONS,
        "--nbval-sanitize-with",
        str(sanitizer),
        f"--nbval-cell-timeout={cell_timeout:g}",
        *extra,
        *(str(nb) for nb in nbs),
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``check`` subcommand's arguments."""
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="DIR_OR_NOTEBOOK",
        help=f"course folders (their *.ipynb files) or notebooks (default: ./{DEFAULT_DIR})",
    )
    parser.add_argument(
        "--cell-timeout",
        type=float,
        default=DEFAULT_CELL_TIMEOUT,
        metavar="SECONDS",
        help=f"fail a cell that runs longer (default {DEFAULT_CELL_TIMEOUT})",
    )
    parser.add_argument(
        "--sanitize-with",
        metavar="FILE",
        help="nbval sanitiser (regex:/replace: lines) instead of the packaged one",
    )


def main(args: argparse.Namespace, pytest_extra: Sequence[str] = (), out: TextIO | None = None) -> int:
    """Check the notebooks; return pytest's exit status (0: every cell matches)."""
    out = out or sys.stdout
    missing = [name for name in NEEDS if importlib.util.find_spec(name) is None]
    if missing:
        raise CourseError(f"pgqueue-lab check needs {', '.join(missing)}: pip install 'pgqueue-lab[test]'")
    nbs = notebooks(args.paths)
    sanitizer = SANITIZER
    if args.sanitize_with:
        sanitizer = Path(args.sanitize_with)
        if not sanitizer.is_file():
            raise CourseError(f"{args.sanitize_with}: no such sanitiser file")
    if args.cell_timeout <= 0:
        raise CourseError(f"--cell-timeout must be positive, not {args.cell_timeout:g}")
    import pytest

    extra = list(pytest_extra)
    if (
        not sys.stdout.isatty()
        and "PY_COLORS" not in os.environ
        and not any(a.startswith("--color") for a in extra)
    ):
        extra.insert(0, "--color=no")  # else nbval colours its reports even in a CI log file
    print(f"pgqueue-lab check: {len(nbs)} notebook(s) under strict nbval", file=out, flush=True)
    status = int(
        pytest.main(pytest_args(nbs, cell_timeout=args.cell_timeout, sanitizer=sanitizer, extra=extra))
    )
    if status == 0:
        print(f"pgqueue-lab check: all {len(nbs)} notebook(s) match their stored outputs", file=out)
    elif status == 1:
        print("pgqueue-lab check: some cells differ from their stored outputs (named above)", file=out)
    return status
