"""The course travels with the package: ``pgqueue-lab course`` copies it into a folder of your own.

The notebooks and the files they need at run time (the worker script of notebook 07) are in the
wheel as ``pgqueue_lab/notebooks`` (in a checkout: the ``notebooks`` folder, which the build maps
there). :func:`copy_course` puts them in a folder the learner owns, where they can be edited
and run:

- a file that is not there yet is added (a notebook new in this version, or one deleted);
- a file the learner has not changed since it was copied is brought up to this version;
- a file the learner changed is kept, and listed, unless ``force=True``.

Which files were copied, and what they held, is recorded in ``.pgqueue-lab-course.json`` in the
folder (hidden from JupyterLab's file browser); without it, a file that differs counts as
changed by the learner. Files of the learner's own are never touched.

``pgqueue-lab lab`` does the same, then opens JupyterLab on the folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from .._version import __version__
from ..errors import CourseError

#: Where ``pgqueue-lab course``, ``lab`` and ``check`` put / look for the course by default.
DEFAULT_DIR = "pgqueue-lab-course"
#: The record of what was copied, in the course folder.
MANIFEST = ".pgqueue-lab-course.json"
#: The files that make up the course: the notebooks and the scripts they run.
COURSE_PATTERNS = ("*.ipynb", "*.py")


def source_dir() -> Path:
    """Return the folder the course is copied from: in the package, or a checkout's ``notebooks``.

    :raises CourseError: neither holds a notebook (a broken installation).
    """
    here = Path(__file__).resolve().parent.parent  # the pgqueue_lab package (this is tools/)
    candidates = [here / "notebooks"]
    if (here.parent / "pyproject.toml").is_file():  # an editable install: the checkout's folder
        candidates.append(here.parent / "notebooks")
    for candidate in candidates:
        if any(candidate.glob("*.ipynb")):
            return candidate
    raise CourseError(
        f"The course's notebooks are missing from this installation of pgqueue-lab ({here}); "
        "reinstall it: pip install --force-reinstall pgqueue-lab"
    )


def course_files(source: Path | None = None) -> list[str]:
    """Return the names of the course's files (notebooks and scripts), sorted."""
    source = source or source_dir()
    names = {p.name for pattern in COURSE_PATTERNS for p in source.glob(pattern) if p.is_file()}
    return sorted(names)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class CopyReport:
    """What :func:`copy_course` did to each course file in ``dest``."""

    dest: Path
    added: list[str] = field(default_factory=list)  # not there before
    updated: list[str] = field(default_factory=list)  # unchanged by the learner, now this version's
    replaced: list[str] = field(default_factory=list)  # changed by the learner, overwritten (force)
    kept: list[str] = field(default_factory=list)  # changed by the learner, left alone
    unchanged: list[str] = field(default_factory=list)  # already this version's


def _read_manifest(dest: Path) -> dict[str, str]:
    try:
        data = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
        files = data["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {str(k): str(v) for k, v in files.items()}


def _copy_file(src: Path, dst: Path) -> None:
    """Copy through a temporary file in the same folder, so an interrupted copy leaves no half file."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")  # created with the user's umask
    try:
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _prepare_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise CourseError(f"{dest} exists and is not a folder: give another folder for the course")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CourseError(f"Cannot create the course folder {dest}: {exc.strerror or exc}") from None


def copy_course(dest: Path, *, force: bool = False, source: Path | None = None) -> CopyReport:
    """Copy the course into ``dest`` (created if needed) and return what happened to each file.

    A file the learner changed since it was copied (or one that differs and was not copied by
    pgqueue-lab) is kept unless ``force``; see the module docstring.

    :raises CourseError: ``dest`` is not a folder or cannot be written (the message says which).
    """
    source = source or source_dir()
    _prepare_dest(dest)
    recorded = _read_manifest(dest)
    report = CopyReport(dest)
    record: dict[str, str] = {}
    try:
        for name in course_files(source):
            src, dst = source / name, dest / name
            new = _digest(src)
            if not dst.exists():
                _copy_file(src, dst)
                report.added.append(name)
            elif (current := _digest(dst)) == new:
                report.unchanged.append(name)
            elif recorded.get(name) == current:  # as copied by an earlier version: not the learner's
                _copy_file(src, dst)
                report.updated.append(name)
            elif force:
                _copy_file(src, dst)
                report.replaced.append(name)
            else:
                report.kept.append(name)
                if name in recorded:
                    record[name] = recorded[name]
                continue
            record[name] = new
        manifest = {"pgqueue-lab": __version__, "files": record}
        (dest / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise CourseError(f"Cannot write the course into {dest}: {exc.strerror or exc}") from None
    return report


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def lab_command(dest: str) -> list[str]:
    """The command that opens JupyterLab on the course folder (``--allow-root`` as root)."""
    return ["jupyter", "lab", *(["--allow-root"] if _is_root() else []), dest]


def print_report(report: CopyReport, shown_dest: str, out: TextIO) -> None:
    """Say what was copied, what was kept and why, in a few lines."""
    total = sum(map(len, (report.added, report.updated, report.replaced, report.kept, report.unchanged)))
    print(f"pgqueue-lab {__version__} course in {shown_dest} ({total} files):", file=out)
    rows = [
        ("added", report.added),
        ("updated", report.updated),
        ("replaced", report.replaced),
    ]
    for label, names in rows:
        for name in names:
            print(f"  {label:<9} {name}", file=out)
    if report.unchanged:
        print(f"  unchanged {len(report.unchanged)} file(s)", file=out)
    if report.replaced:
        print(f"Your changes to {len(report.replaced)} file(s) were overwritten (--force).", file=out)
    if report.kept:
        print(
            f"Kept your changes to {len(report.kept)} file(s); this version's differ "
            "(--force replaces them with this version's):",
            file=out,
        )
        for name in report.kept:
            print(f"  kept      {name}", file=out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``course`` and ``lab`` subcommands' arguments."""
    parser.add_argument(
        "dir", nargs="?", default=DEFAULT_DIR, help=f"the course folder (default: ./{DEFAULT_DIR})"
    )
    parser.add_argument(
        "--force", action="store_true", help="also overwrite notebooks you changed (listed first)"
    )


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``pgqueue-lab course [DIR] [--force]``: copy the course, say what happened and what next."""
    out = out or sys.stdout
    report = copy_course(Path(args.dir), force=args.force)
    print_report(report, args.dir, out)
    print(f"Next: {shlex.join(lab_command(args.dir))}", file=out)
    return 0


def lab_main(args: argparse.Namespace, jupyter_args: Sequence[str] = (), out: TextIO | None = None) -> int:
    """``pgqueue-lab lab [DIR] [--force] [-- JUPYTER_ARGS]``: copy the course, open JupyterLab on it."""
    out = out or sys.stdout
    if importlib.util.find_spec("jupyterlab") is None:
        raise CourseError("JupyterLab is not installed: pip install 'pgqueue-lab[notebooks]'")
    report = copy_course(Path(args.dir), force=args.force)
    print_report(report, args.dir, out)
    command = lab_command(args.dir)
    command[2:2] = [a for a in jupyter_args if a != "--allow-root" or "--allow-root" not in command]
    print(f"Opening: {shlex.join(command)}", file=out, flush=True)
    argv = [sys.executable, "-m", "jupyterlab", *command[2:]]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        # Become JupyterLab: Ctrl-C then reaches it alone (it asks before shutting its kernels down).
        os.execv(sys.executable, argv)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # Windows: JupyterLab handles Ctrl-C
    try:
        return subprocess.call(argv)
    finally:
        signal.signal(signal.SIGINT, previous)
