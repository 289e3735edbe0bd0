"""``pgqueue-lab enqueue``: a producer in a terminal.

::

    pgqueue-lab enqueue --schema nb10_live email '{"to": "alice@example.com"}' --count 60 --rate 20

Enqueues ``--count`` jobs of one type and payload through the batch path
(:meth:`~pgqueue_lab.core.queue.Queue.enqueue_many`: up to 1000 jobs per statement, one ``NOTIFY``
per statement), all at once or ``--rate`` jobs per second (a steady producer to watch), with a
progress bar when it takes a while. ``--create`` creates the queue first if it does not exist;
without it an unknown schema is an error (a typo would otherwise make a new, unserved queue).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, TextIO

from ..core import db, validate
from ..core.queue import DEFAULT_MAX_ATTEMPTS, NewJob, Queue
from ..errors import InvalidInputError
from . import terminal

#: Jobs per statement when enqueueing all at once.
CHUNK = 1000


def parse_payload(text: str | None) -> Any:
    """The payload given on the command line, decoded (``None``: an empty payload)."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"the payload is not valid JSON ({exc.msg} at character {exc.pos}): {text!r}; "
            """quote it for the shell, e.g. '{"to": "alice@example.com"}'"""
        ) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "Enqueue jobs of one type from this terminal (the batch path)."
    parser.add_argument("--schema", required=True, help="the queue's schema")
    parser.add_argument("type", help="the job type (the demo's handlers know email, report, resize)")
    parser.add_argument("payload", nargs="?", metavar="JSON", help="the payload, a JSON value (default {})")
    parser.add_argument("--count", type=int, default=1, metavar="N", help="how many jobs (default 1)")
    parser.add_argument(
        "--rate", type=float, metavar="JOBS_PER_S", help="enqueue this many per second (default: all at once)"
    )
    parser.add_argument("--delay", type=float, default=0.0, metavar="SECONDS", help="due this long from now")
    parser.add_argument("--priority", type=int, default=0, help="higher goes first (default 0)")
    parser.add_argument("--queue", default="default", help="the named queue (default %(default)s)")
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=DEFAULT_MAX_ATTEMPTS,
        metavar="N",
        help="runs before failed for good",
    )
    parser.add_argument("--create", action="store_true", help="create the queue first if it does not exist")


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    queue = Queue(args.schema)
    count = validate.positive_int(args.count, "--count")
    rate = None if args.rate is None else validate.seconds(args.rate, "--rate")
    if rate is not None and (rate == 0 or not math.isfinite(rate)):
        raise InvalidInputError(f"--rate must be a positive number of jobs per second, got {args.rate}")
    job = NewJob(
        args.type,
        parse_payload(args.payload),
        queue=args.queue,
        priority=args.priority,
        delay=args.delay,
        max_attempts=args.max_attempts,
    )
    ids: list[int] = []
    with db.connect(application_name="pgqueue-lab enqueue") as conn:
        if args.create:
            queue.create(conn)
        else:
            terminal.require_queue(queue)
        try:
            with terminal.bar(
                f"enqueueing into {queue.schema}", count, min_steps=1 if rate else 2000
            ) as advance:
                if rate is None:
                    while len(ids) < count:
                        batch = min(CHUNK, count - len(ids))
                        ids += queue.enqueue_many(conn, [job] * batch)
                        advance(batch)
                else:
                    start = time.monotonic()
                    while len(ids) < count:
                        due = min(count, 1 + int((time.monotonic() - start) * rate))
                        if due > len(ids):
                            batch = due - len(ids)
                            ids += queue.enqueue_many(conn, [job] * batch)
                            advance(batch)
                        else:
                            time.sleep(min(0.1, max(0.001, len(ids) / rate - (time.monotonic() - start))))
        except KeyboardInterrupt:
            print(f"stopped: enqueued {len(ids)} of {count} {job.type} job(s) into {queue.schema}", file=out)
            return 130
    print(f"enqueued {len(ids)} {job.type} job(s) into {queue.schema} (ids {ids[0]}-{ids[-1]})", file=out)
    return 0
