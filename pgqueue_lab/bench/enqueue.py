"""Enqueue workloads: ``enqueue`` per job and ``enqueue_many`` against ``COPY`` (the baseline)."""

from __future__ import annotations

import time

from psycopg.types.json import Jsonb

from ..core import sql
from ..core.queue import Connection, NewJob, Queue
from .common import NOOP

COPY_JOBS = "COPY {schema}.jobs (type, payload) FROM STDIN"


def enqueue_single(conn: Connection, queue: Queue, rows: int) -> float:
    """``queue.enqueue`` once per job (a transaction each); return seconds."""
    start = time.perf_counter()
    for i in range(rows):
        queue.enqueue(conn, NOOP, {"n": i})
    return time.perf_counter() - start


def enqueue_batch(conn: Connection, queue: Queue, rows: int, per_call: int = 1000) -> float:
    """``queue.enqueue_many`` with ``per_call`` jobs per call; return seconds."""
    start = time.perf_counter()
    for first in range(0, rows, per_call):
        queue.enqueue_many(conn, [NewJob(NOOP, {"n": i}) for i in range(first, min(first + per_call, rows))])
    return time.perf_counter() - start


def copy_rows(conn: Connection, queue: Queue, rows: int, per_txn: int = 1000) -> float:
    """The baseline: psycopg ``cursor.copy``, ``per_txn`` rows per transaction; return seconds."""
    statement = sql.compose(COPY_JOBS, queue.schema)
    start = time.perf_counter()
    for first in range(0, rows, per_txn):
        with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
            for i in range(first, min(first + per_txn, rows)):
                copy.write_row((NOOP, Jsonb({"n": i})))
    return time.perf_counter() - start
