"""Pausing a named queue: no worker claims its jobs until it is resumed; workers keep running.

``pause(queue, conn, "emails")`` adds the name to the small ``paused_queues`` table; every claim
checks it (``queue NOT IN (SELECT ...)`` in :data:`pgqueue_lab.sql.CLAIM`: the table is read
once per claim, into a hash table), so the pause takes effect at the next claim of every
worker, wherever it runs. Jobs
already claimed run to their end. ``resume`` deletes the row and announces the queue (NOTIFY),
so idle workers look at once. Enqueueing into a paused queue works; its jobs wait.

A draining worker (``run(until_empty=True)``) does not wait for a paused queue: its pending
jobs do not count as work left (:data:`pgqueue_lab.sql.HAS_WORK`).

Peers: Oban's ``pause_queue``/``resume_queue``, River's ``QueuePause``/``QueueResume``,
BullMQ's ``queue.pause()``; pg-boss has none (pg-boss#659 asks for it).

``pgqueue-lab pause --schema S QUEUE`` and ``pgqueue-lab resume --schema S QUEUE`` do the same
from a terminal; ``pgqueue-lab pause --schema S`` lists the paused queues.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from . import db, sql, terminal, validate
from .queue import Connection, Queue


def pause(queue: Queue, conn: Connection, name: str) -> bool:
    """Pause the named queue ``name``. Returns ``False`` if it was paused already.

    :raises InvalidInputError: ``name`` is not a usable queue name, before anything is sent.
    """
    params = {"queue": validate.job_type(name, what="queue name")}
    with queue._tx(conn):
        return conn.execute(queue._q(sql.PAUSE), params).fetchone() is not None


def resume(queue: Queue, conn: Connection, name: str) -> bool:
    """Resume the named queue ``name`` and wake idle workers. Returns ``False`` if it was not
    paused.

    :raises InvalidInputError: ``name`` is not a usable queue name, before anything is sent.
    """
    params = {"queue": validate.job_type(name, what="queue name"), "channel": queue.channel}
    with queue._tx(conn):
        return conn.execute(queue._q(sql.RESUME), params).fetchone() is not None


def paused(queue: Queue, conn: Connection) -> list[str]:
    """The paused queues, by name."""
    with queue._tx(conn):
        return [str(r[0]) for r in conn.execute(queue._q(sql.PAUSED)).fetchall()]


# -- pgqueue-lab pause / resume ----------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, *, resuming: bool) -> None:
    parser.description = (
        "Resume a paused named queue: workers take its jobs again."
        if resuming
        else "Pause a named queue: workers keep running but take none of its jobs (no QUEUE: list)."
    )
    parser.add_argument("--schema", required=True, help="the queue's schema")
    parser.add_argument(
        "queue", nargs=None if resuming else "?", metavar="QUEUE", help="the named queue (e.g. default)"
    )


def main(args: argparse.Namespace, *, resuming: bool, out: TextIO | None = None) -> int:
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
