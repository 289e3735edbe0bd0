"""Pausing a named queue: workers keep running and take none of its jobs until it is resumed."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg
import pytest

from pgqueue_lab import InvalidInputError, Job, Queue, Worker
from pgqueue_lab.features.pause import pause, paused, resume


def test_a_paused_queue_waits_while_the_others_run_and_resuming_wakes_the_worker(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    assert pause(queue, conn, "emails") is True
    assert pause(queue, conn, "emails") is False and paused(queue, conn) == ["emails"]
    emails = queue.enqueue_many(conn, [{"type": "t", "queue": "emails"}] * 20)
    reports = queue.enqueue_many(conn, [{"type": "t", "queue": "reports"}] * 20)
    ran: Counter[int] = Counter()
    lock = threading.Lock()
    reports_done, emails_done = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        with lock:
            ran[job.id] += 1
            if set(reports) <= set(ran):
                reports_done.set()
            if set(emails) <= set(ran):
                emails_done.set()

    worker = Worker(queue, {"t": handler}, dsn=dsn, threads=2, batch_size=3, name="p", poll_interval=30)
    worker.start()
    try:
        assert reports_done.wait(20)
        assert not emails_done.wait(0.5)
        assert set(ran) == set(reports)  # nothing of the paused queue ran
        assert resume(queue, conn, "emails") is True  # its NOTIFY wakes the idle threads (poll: 30 s)
        assert emails_done.wait(20)
    finally:
        worker.stop(timeout=30)
    assert set(ran.values()) == {1} and set(ran) == set(emails) | set(reports)
    assert resume(queue, conn, "emails") is False and paused(queue, conn) == []


def test_pausing_mid_batch_lets_the_claimed_jobs_finish_and_claims_no_more(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """The pause comes from the batch's first handler: the rest of the batch (already claimed)
    runs, nothing more is claimed, and a draining worker stops instead of waiting forever."""
    ids = queue.enqueue_many(conn, [("t", {})] * 30)
    ran: list[int] = []

    def handler(job: Job) -> None:
        if not ran:
            with psycopg.connect(dsn, autocommit=True) as own:
                pause(queue, own, "default")
        ran.append(job.id)

    Worker(queue, {"t": handler}, dsn=dsn, batch_size=10, name="p").run()
    assert ran == ids[:10]
    counts = dict(queue.status_counts(conn))
    assert (counts["completed"], counts["pending"]) == (10, 20)
    assert queue.next_due(conn) is None and queue.has_work(conn) is False


@pytest.mark.parametrize("bad", ["", " q", 3, None])
def test_a_bad_queue_name_is_refused(conn: psycopg.Connection[Any], queue: Queue, bad: Any) -> None:
    with pytest.raises(InvalidInputError, match="queue name"):
        pause(queue, conn, bad)
    with pytest.raises(InvalidInputError, match="queue name"):
        resume(queue, conn, bad)
    assert paused(queue, conn) == []


def test_create_analyses_the_side_tables_the_claims_read(conn: psycopg.Connection[Any], queue: Queue) -> None:
    # A table never analysed has reltuples = -1 (PostgreSQL 14+): the planner then assumes ten
    # pages of rows, and an anti-join against it sorts the whole queue (notebook 14).
    stats = conn.execute(
        "SELECT c.relname, c.reltuples FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname IN ('paused_queues', 'key_turns') ORDER BY c.relname",
        (queue.schema,),
    ).fetchall()
    assert stats == [("key_turns", 0.0), ("paused_queues", 0.0)]
