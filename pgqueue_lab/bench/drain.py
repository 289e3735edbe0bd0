"""Drain workloads: the Worker, the raw batched loop (the baseline) and the seed's algorithm."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..core import db, sql
from ..core.queue import Connection, Queue
from ..core.worker import Worker
from .common import NOOP, BenchError, fill, fresh_queue, in_threads, noop

#: The baseline claim: the helper's index order, only what a handler needs back, no BEGIN/COMMIT
#: round trips around it (an autocommit statement is its own transaction).
RAW_CLAIM = """\
WITH next AS (
    SELECT id FROM {schema}.jobs
    WHERE status = 'pending' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j SET status = 'running', started_at = now()
FROM next WHERE j.id = next.id
RETURNING j.id, j.payload"""

RAW_COMPLETE = """\
UPDATE {schema}.jobs SET status = 'completed', finished_at = now()
WHERE id = ANY(%(ids)s)"""

#: The seed's algorithm, transaction 1: take one pending job and mark it running...
SEED_SELECT = """\
SELECT * FROM {schema}.jobs
WHERE status = 'pending'
LIMIT 1
FOR UPDATE SKIP LOCKED"""
SEED_MARK_RUNNING = "UPDATE {schema}.jobs SET status = 'running', started_at = now() WHERE id = %(id)s"
#: ... transaction 2: mark it completed.
SEED_COMPLETE = "UPDATE {schema}.jobs SET status = 'completed', finished_at = now() WHERE id = %(id)s"


def worker_drain(dsn: str, queue: Queue, *, threads: int, batch_size: int) -> float:
    """Drain the queue with a :class:`Worker`; return the seconds taken (connecting included)."""
    worker = Worker(queue, {NOOP: noop}, dsn=dsn, threads=threads, batch_size=batch_size, name="bench")
    start = time.perf_counter()
    worker.run(until_empty=True)
    return time.perf_counter() - start


def raw_batch(conn: Connection, queue: Queue, limit: int) -> int:
    """The baseline: claim up to ``limit`` jobs (:data:`RAW_CLAIM`), run them, complete them in one
    statement (:data:`RAW_COMPLETE`), each statement its own transaction. Returns the jobs run."""
    rows = conn.execute(sql.compose(RAW_CLAIM, queue.schema), {"limit": limit}).fetchall()
    for _id, payload in rows:
        noop(payload)
    if rows:
        conn.execute(sql.compose(RAW_COMPLETE, queue.schema), {"ids": [row[0] for row in rows]})
    return len(rows)


def seed_job(conn: Connection, queue: Queue) -> bool:
    """The seed's algorithm, one job: take it and mark it running in one transaction, run it,
    mark it completed in a second one. Returns whether there was a job."""
    with conn.transaction():
        row = conn.execute(sql.compose(SEED_SELECT, queue.schema)).fetchone()
        if row is None:
            return False
        conn.execute(sql.compose(SEED_MARK_RUNNING, queue.schema), {"id": row[0]})
    noop(row[3])
    conn.execute(sql.compose(SEED_COMPLETE, queue.schema), {"id": row[0]})
    return True


def raw_drain(dsn: str, queue: Queue, *, threads: int, batch_size: int) -> float:
    """Drain with :func:`raw_batch` in ``threads`` threads; return the seconds taken."""

    def loop() -> None:
        with db.connect(dsn) as conn:
            while raw_batch(conn, queue, batch_size):
                pass

    return in_threads(threads, loop)


def seed_drain(dsn: str, queue: Queue, *, threads: int) -> float:
    """Drain with :func:`seed_job` in ``threads`` threads; return the seconds taken."""

    def loop() -> None:
        with db.connect(dsn) as conn:
            while seed_job(conn, queue):
                pass

    return in_threads(threads, loop)


#: How long each job of the I/O-bound workload waits.
IO_SECONDS = 0.005


def io_drain(dsn: str, queue: Queue, *, threads: int, batch_size: int) -> float:
    """Drain with a :class:`Worker` whose handlers sleep :data:`IO_SECONDS`, as a call to another
    service would; return the seconds from the first handler's start to the last one's end (the
    worker's start and stop left out: they would weigh on short runs). Threads then spend their
    time waiting, not computing: N threads should finish N times sooner than one, until the
    database or the Python interpreter becomes the limit."""
    stamps: list[float] = []

    def wait_like_io(job: object) -> None:
        stamps.append(time.perf_counter())
        time.sleep(IO_SECONDS)
        stamps.append(time.perf_counter())

    worker = Worker(
        queue, {NOOP: wait_like_io}, dsn=dsn, threads=threads, batch_size=batch_size, name="bench"
    )
    worker.run(until_empty=True)
    return max(stamps) - min(stamps)


def drain_seconds(conn: Connection, jobs: int, tag: str, drain: Callable[[Queue], float]) -> float:
    """Fill a fresh queue with ``jobs`` no-op jobs, ``drain`` it; return the seconds ``drain`` took.

    :raises BenchError: if not every job was completed.
    """
    with fresh_queue(conn, tag) as queue:
        fill(conn, queue, jobs)
        seconds = drain(queue)
        left = dict(queue.status_counts(conn))
        if left["completed"] != jobs:
            raise BenchError(f"{tag}: {left['completed']} of {jobs} jobs completed ({left})")
    return seconds
