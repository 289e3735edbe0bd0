"""The ``pgqueue-lab`` command line.

``pgqueue-lab demo``            run the seed's walk-through (the default)
``pgqueue-lab db url``          print the DSN in use (password masked)
``pgqueue-lab db status``       where the database comes from and whether it answers
``pgqueue-lab db stop``         stop the embedded server
``pgqueue-lab bench``           measure the queue against raw-SQL baselines (``--help``)
``pgqueue-lab course [DIR]``    copy the course (notebooks) into DIR, keeping your changes
``pgqueue-lab lab [DIR]``       the same, then open JupyterLab on it
``pgqueue-lab check [PATH...]`` run notebooks under strict nbval, as the tests do (for CI)
``pgqueue-lab classroom ...``   a class on one server: ``create``, ``list``, ``watch``, ``drop`` students
``pgqueue-lab worker ...``      a worker process serving a queue until Ctrl-C
``pgqueue-lab enqueue ...``     a producer: jobs of one type, at once or at a rate
``pgqueue-lab watch ...``       a live view of a queue (rich), until Ctrl-C
``pgqueue-lab cancel ...``      cancel jobs by id (pending: never run; running: told to stop)
``pgqueue-lab pause ...``       pause a named queue (workers take none of its jobs); list paused
``pgqueue-lab resume ...``      resume a paused named queue
``pgqueue-lab --version``       the version

Each command family lives in its own module of :mod:`pgqueue_lab.tools` (``course``,
``check``, ``classroom``, ``control``...) or in :mod:`pgqueue_lab.bench`; this one only
dispatches. Bad input is one line on stderr and exit status 2, never a traceback.

``lab`` and ``check`` pass what follows ``--`` on to JupyterLab and pytest.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

import psycopg

from .. import bench, embedded
from .._version import __version__
from ..core import db
from ..errors import QueueError
from . import check, classroom, control, course, enqueue, serve, terminal, watch
from .demo import run_demo


def _db_status() -> int:
    print(f"source:   {db.source()}")
    if db.source() == "embedded":
        status = embedded.embedded_status()
        print(f"data dir: {status['data_dir']}")
        others = len(status["attached_pids"])
        print(
            f"server:   {'running' if status['running'] else 'not running'}, used by {others} other "
            "process(es); it runs while a process uses it (this command starts it if needed)"
        )
    dsn = db.get_dsn()
    print(f"dsn:      {db.mask_dsn(dsn)}")
    with db.connect(dsn) as conn:
        print(f"version:  PostgreSQL {conn.info.server_version // 10000} ({db.describe_dsn(dsn)})")
    print("status:   reachable")
    return 0


def _db_stop() -> int:
    if db.source() != "embedded":
        print(
            f"{db.DSN_ENV} points at an external server ({db.describe_dsn(db.get_dsn())}); nothing to stop."
        )
        return 0
    print(embedded.stop_embedded())
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors on one line (not the usage block), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pgqueue-lab: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pgqueue-lab",
        description="Learn to build a job queue on PostgreSQL. "
        f"Uses ${db.DSN_ENV} if set, otherwise an embedded PostgreSQL that starts by itself.",
    )
    parser.add_argument("--version", action="version", version=f"pgqueue-lab {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    sub.add_parser("demo", help="run the seed walk-through: enqueue, process, final status")
    db_parser = sub.add_parser("db", help="the database: url, status, stop")
    db_parser.add_argument("action", choices=["url", "status", "stop"])
    bench.add_arguments(sub.add_parser("bench", help="measure the queue against raw-SQL baselines"))
    course.add_arguments(sub.add_parser("course", help="copy the course into a folder, keeping your changes"))
    course.add_arguments(
        sub.add_parser(
            "lab",
            help="copy the course, then open JupyterLab on it",
            epilog="Arguments after -- go to JupyterLab, e.g. pgqueue-lab lab -- --no-browser",
        )
    )
    check.add_arguments(
        sub.add_parser(
            "check",
            help="run notebooks under strict nbval, as the tests do (exit 1 if a cell differs)",
            epilog="Arguments after -- go to pytest, e.g. pgqueue-lab check DIR -- -x",
        )
    )
    classroom.add_arguments(
        sub.add_parser(
            "classroom", help="a class on one server: create, list, watch, drop students (roles + databases)"
        )
    )
    serve.add_arguments(sub.add_parser("worker", help="serve a queue from this terminal until Ctrl-C"))
    enqueue.add_arguments(sub.add_parser("enqueue", help="enqueue jobs of one type, at once or at a rate"))
    watch.add_arguments(sub.add_parser("watch", help="a live view of a queue until Ctrl-C"))
    control.add_cancel_arguments(sub.add_parser("cancel", help="cancel jobs by id"))
    control.add_pause_arguments(
        sub.add_parser("pause", help="pause a named queue (no QUEUE: list)"), resuming=False
    )
    control.add_pause_arguments(sub.add_parser("resume", help="resume a paused named queue"), resuming=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors print one line to stderr, no traceback."""
    argv = list(sys.argv[1:] if argv is None else argv)
    terminal.exit_with_parent()  # started from a notebook: end with it
    passed_on: list[str] = []  # after "--": for JupyterLab (lab) or pytest (check)
    if "--" in argv:
        argv, passed_on = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if passed_on and args.command not in ("lab", "check"):
        parser.error(f"only lab and check take arguments after --, not {args.command or 'demo'}")
    try:
        if args.command in (None, "demo"):
            run_demo()
            return 0
        if args.command == "bench":
            return bench.main(args)
        if args.command == "course":
            return course.main(args)
        if args.command == "lab":
            return course.lab_main(args, passed_on)
        if args.command == "check":
            return check.main(args, passed_on)
        if args.command == "classroom":
            return classroom.main(args)
        if args.command == "worker":
            return serve.main(args)
        if args.command == "enqueue":
            return enqueue.main(args)
        if args.command == "watch":
            return watch.main(args)
        if args.command == "cancel":
            return control.cancel_main(args)
        if args.command in ("pause", "resume"):
            return control.pause_main(args, resuming=args.command == "resume")
        if args.action == "url":
            print(db.mask_dsn(db.get_dsn()))
            return 0
        if args.action == "status":
            return _db_status()
        return _db_stop()
    except QueueError as exc:
        print(f"pgqueue-lab: error: {exc}", file=sys.stderr)
        return 2
    except psycopg.errors.InsufficientPrivilege as exc:  # a DSN without the rights a command needs
        print(f"pgqueue-lab: error: the database refused: {_first_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
