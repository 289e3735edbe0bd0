"""The ``pgqueue-lab`` command line.

``pgqueue-lab demo``            run the seed's walk-through (the default)
``pgqueue-lab db url``          print the DSN in use (password masked)
``pgqueue-lab db status``       where the database comes from and whether it answers
``pgqueue-lab db stop``         stop the embedded server
``pgqueue-lab bench``           measure the queue against raw-SQL baselines (``--help``)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import bench, db
from .demo import run_demo
from .errors import QueueError


def _db_status() -> int:
    print(f"source:   {db.source()}")
    if db.source() == "embedded":
        status = db.embedded_status()
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
    print(db.stop_embedded())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgqueue-lab",
        description="Learn to build a job queue on PostgreSQL. "
        f"Uses ${db.DSN_ENV} if set, otherwise an embedded PostgreSQL that starts by itself.",
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="run the seed walk-through: enqueue, process, final status")
    db_parser = sub.add_parser("db", help="the database: url, status, stop")
    db_parser.add_argument("action", choices=["url", "status", "stop"])
    bench.add_arguments(sub.add_parser("bench", help="measure the queue against raw-SQL baselines"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status. Errors print one line to stderr, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        if args.command in (None, "demo"):
            run_demo()
            return 0
        if args.command == "bench":
            return bench.main(args)
        if args.action == "url":
            print(db.mask_dsn(db.get_dsn()))
            return 0
        if args.action == "status":
            return _db_status()
        return _db_stop()
    except QueueError as exc:
        print(f"pgqueue-lab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
