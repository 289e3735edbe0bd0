"""``pgqueue-lab cancel``, ``pause`` and ``resume``: two features from a terminal.

Each command checks its input before it connects (one line and exit status 2 on bad input,
as every command), then calls the feature: :func:`pgqueue_lab.features.cancel.cancel`,
:func:`pgqueue_lab.features.pause.pause`, :func:`~pgqueue_lab.features.pause.resume` and
:func:`~pgqueue_lab.features.pause.paused`.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ..core import db, validate
from ..core.queue import Queue
from ..errors import InvalidInputError
from ..features.cancel import cancel
from ..features.pause import pause, paused, resume
from . import terminal

# -- pgqueue-lab cancel ----------------------------------------------------------------------


def add_cancel_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Cancel jobs: pending ones never run, running ones are asked to stop."
    parser.add_argument("--schema", required=True, help="the queue's schema")
    parser.add_argument("ids", nargs="+", metavar="ID", help="the ids of the jobs to cancel")


def cancel_main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    queue = Queue(args.schema)
    ids = []
    for text in args.ids:
        if not (text.isascii() and text.isdigit()):  # str.isdigit() also takes '²' and '٣'
            raise InvalidInputError(f"a job id is a positive whole number (digits 0-9), got {text!r}")
        ids.append(int(text))
    for job_id in ids:
        validate.integer(job_id, "job id", bits=64)
    terminal.require_queue(queue)
    with db.connect(application_name="pgqueue-lab cancel") as conn:
        done = cancel(queue, conn, ids)
    for job_id in sorted(set(ids)):
        was = done.get(job_id)
        if was == "pending":
            print(f"job {job_id}: cancelled (it was pending; it will not run)", file=out)
        elif was == "running":
            print(f"job {job_id}: cancelled (it was running; its worker is told to stop)", file=out)
        else:
            print(f"job {job_id}: not cancelled (no such job, or it had already finished)", file=out)
    return 0


# -- pgqueue-lab pause / resume ----------------------------------------------------------------


def add_pause_arguments(parser: argparse.ArgumentParser, *, resuming: bool) -> None:
    parser.description = (
        "Resume a paused named queue: workers take its jobs again."
        if resuming
        else "Pause a named queue: workers keep running but take none of its jobs (no QUEUE: list)."
    )
    parser.add_argument("--schema", required=True, help="the queue's schema")
    parser.add_argument(
        "queue", nargs=None if resuming else "?", metavar="QUEUE", help="the named queue (e.g. default)"
    )


def pause_main(args: argparse.Namespace, *, resuming: bool, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    queue = Queue(args.schema)
    name = None if args.queue is None else validate.job_type(args.queue, what="queue name")
    terminal.require_queue(queue)
    with db.connect(application_name="pgqueue-lab pause") as conn:
        if name is None:
            names = paused(queue, conn)
            print(f"paused in {queue.schema}: {', '.join(names) if names else 'none'}", file=out)
        elif resuming:
            done = resume(queue, conn, name)
            print(f"queue {name!r} of {queue.schema}: {'resumed' if done else 'was not paused'}", file=out)
        else:
            done = pause(queue, conn, name)
            print(f"queue {name!r} of {queue.schema}: {'paused' if done else 'was paused already'}", file=out)
    return 0
