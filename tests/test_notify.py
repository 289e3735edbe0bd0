"""LISTEN/NOTIFY: delivered on commit only, waiting wakes in time, polling covers lost ones."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest

from pgqueue_lab import Job, Queue, Worker, db, sql


@pytest.fixture
def listener(dsn: str, queue: Queue) -> Any:
    with db.connect(dsn) as conn:
        queue.listen(conn)
        yield conn


def test_notification_is_sent_on_commit(conn: psycopg.Connection[Any], queue: Queue, listener: Any) -> None:
    queue.enqueue(conn, "email", queue="mail")
    assert queue.wait(listener, timeout=5) == ["mail"]


def test_no_notification_on_rollback(conn: psycopg.Connection[Any], queue: Queue, listener: Any) -> None:
    with pytest.raises(ZeroDivisionError), conn.transaction():
        queue.enqueue(conn, "email")
        1 / 0  # noqa: B018 - the caller's transaction fails after the enqueue
    assert queue.wait(listener, timeout=0.5) == []
    assert queue.jobs(conn) == []


def test_notification_waits_for_the_commit(
    conn: psycopg.Connection[Any], queue: Queue, listener: Any
) -> None:
    with conn.transaction():
        queue.enqueue(conn, "email")
        assert queue.wait(listener, timeout=0.3) == []  # not yet: still in the transaction
    assert queue.wait(listener, timeout=5) == ["default"]


def test_a_batch_sends_one_notification_per_queue(
    conn: psycopg.Connection[Any], queue: Queue, listener: Any
) -> None:
    queue.enqueue_many(conn, [("t", {})] * 50 + [{"type": "t", "queue": "other"}])
    got: list[str] = []
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        got += queue.wait(listener, timeout=1)
    assert sorted(got) == ["default", "other"]
    assert queue.wait(listener, timeout=0.3) == []  # and no more than that


def test_wait_wakes_within_a_bound(dsn: str, queue: Queue, listener: Any) -> None:
    def produce() -> None:
        time.sleep(0.2)
        with db.connect(dsn) as other:
            queue.enqueue(other, "email")

    thread = threading.Thread(target=produce)
    start = time.monotonic()
    thread.start()
    assert queue.wait(listener, timeout=10) == ["default"]
    elapsed = time.monotonic() - start
    thread.join()
    assert elapsed < 5  # woke by the notification, long before the 10 s timeout


def test_worker_finds_a_job_whose_notification_was_missed(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    seen: list[int] = []
    done = threading.Event()

    def handler(job: Job) -> None:
        seen.append(job.id)
        done.set()

    worker = Worker(queue, {"t": handler}, dsn=dsn, poll_interval=0.2, name="poller")
    worker.start()
    try:
        time.sleep(0.3)  # the worker is now idle, waiting
        # A job inserted without NOTIFY: only the polling fallback can find it.
        job_id = conn.execute(
            sql.compose("INSERT INTO {schema}.jobs (type) VALUES ('t') RETURNING id", queue.schema)
        ).fetchone()
        assert done.wait(10), "the polling fallback never claimed the job"
    finally:
        worker.stop(timeout=10)
    assert job_id is not None and seen == [job_id[0]]
    assert queue.status_counts(conn)[2] == ("completed", 1)


def test_idle_worker_wakes_on_notify_before_its_poll_interval(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    done = threading.Event()
    worker = Worker(queue, {"t": lambda job: done.set()}, dsn=dsn, poll_interval=30, name="sleeper")
    worker.start()
    try:
        time.sleep(1.0)  # let the listener subscribe and the thread go idle
        queue.enqueue(conn, "t")
        assert done.wait(10), "the NOTIFY did not wake the worker (poll interval is 30 s)"
    finally:
        worker.stop(timeout=10)


def test_retries_releases_and_rescues_are_announced(
    conn: psycopg.Connection[Any], queue: Queue, listener: Any
) -> None:
    """An idle worker in another process must hear of every job that becomes pending again."""
    queue.enqueue(conn, "t", queue="retry")
    queue.enqueue(conn, "t", queue="release")
    queue.enqueue(conn, "t", queue="rescue")
    queue.wait(listener, timeout=1)  # the three enqueue notifications (merged per queue)
    while queue.wait(listener, timeout=0.2):
        pass

    (job,) = queue.claim(conn, "w", queues="retry")
    assert queue.fail(conn, job, "boom", retry_delay=0.01) == "pending"
    assert queue.wait(listener, timeout=5) == ["retry"]

    (job,) = queue.claim(conn, "w", queues="release")
    assert queue.release(conn, [job]) == [job.id]
    assert queue.wait(listener, timeout=5) == ["release"]

    (job,) = queue.claim(conn, "w", queues="rescue", lease=0.0)
    time.sleep(0.01)
    assert queue.rescue(conn) == [(job.id, "pending")]
    assert queue.wait(listener, timeout=5) == ["rescue"]

    (job,) = queue.claim(conn, "w", queues="retry")  # a job that is dead-lettered: no announcement
    conn.execute(
        sql.compose("UPDATE {schema}.jobs SET max_attempts = attempts WHERE id = %s", queue.schema), [job.id]
    )
    assert queue.fail(conn, job, "boom") == "failed"
    assert queue.wait(listener, timeout=0.3) == []
