"""Cancellation: pending jobs never run, running ones are told to stop and stay cancelled."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from pgqueue_lab import InvalidInputError, Job, Queue, Worker, db
from pgqueue_lab.features.cancel import cancel, channel


def _statuses(conn: psycopg.Connection[Any], queue: Queue) -> dict[int, str]:
    return {job["id"]: job["status"] for job in queue.jobs(conn)}


def _wait_for_listen(conn: psycopg.Connection[Any], name: str) -> None:
    query = "SELECT count(*) FROM pg_stat_activity WHERE query = %s"
    listen = f'LISTEN "{name}"'
    deadline = time.monotonic() + 10
    while conn.execute(query, [listen]).fetchone() != (1,):
        assert time.monotonic() < deadline, "the worker's listener never ran LISTEN"
        time.sleep(0.01)


def test_a_cancelled_running_job_late_writes_change_nothing(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """The fencing: a handler that finishes after its job was cancelled records nothing; the job
    stays cancelled (never completed, retried or released)."""
    queue.enqueue_many(conn, [("t", {})] * 4)
    a, b, c, d = queue.claim(conn, "w", limit=4)
    assert cancel(queue, conn, [a.id, b.id, c.id, d.id]) == dict.fromkeys([a.id, b.id, c.id, d.id], "running")
    assert queue.complete(conn, a) == 0
    assert queue.fail(conn, b, "late") is None
    assert queue.release(conn, [c]) == []
    assert queue.heartbeat(conn, [d], lease=60) == []
    assert queue.claim(conn, "w", limit=4) == []
    assert set(_statuses(conn, queue).values()) == {"cancelled"}
    assert queue.rescue(conn) == [] and queue.requeue(conn, [a.id, b.id]) == []


def test_cancelled_pending_jobs_never_run(dsn: str, conn: psycopg.Connection[Any], queue: Queue) -> None:
    ids = queue.enqueue_many(conn, [("t", {"n": n}) for n in range(200)])
    doomed = set(random.Random(1).sample(ids, 60))
    assert cancel(queue, conn, doomed) == dict.fromkeys(sorted(doomed), "pending")
    assert cancel(queue, conn, doomed) == {}  # finished jobs are left alone
    ledger: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            ledger[job.id] += 1

    Worker(queue, {"t": handler}, dsn=dsn, threads=4, batch_size=7, name="c").run()
    assert set(ledger) == set(ids) - doomed and set(ledger.values()) == {1}
    counts = dict(queue.status_counts(conn))
    assert (counts["completed"], counts["cancelled"]) == (140, 60)


@pytest.mark.parametrize("listening", [True, False], ids=["notify", "polling"])
def test_a_running_handler_learns_of_its_cancel_and_the_job_stays_cancelled(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, listening: bool
) -> None:
    """With a listener the NOTIFY tells the worker; without one (a draining worker) the
    heartbeat's polling fallback does. Either way the handler sees ``cancel_requested``, its
    batch's unstarted jobs never start, and its success is not recorded."""
    slow, after, third = queue.enqueue_many(conn, [("slow", {}), ("t", {}), ("t", {})])
    started, third_ran, ran = threading.Event(), threading.Event(), Counter[int]()
    saw: list[bool] = []

    def slow_handler(job: Job) -> None:
        ran[job.id] += 1
        started.set()
        deadline = time.monotonic() + 20
        while not job.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.01)
        saw.append(job.cancel_requested)

    def handler(job: Job) -> None:
        ran[job.id] += 1
        if job.id == third:
            third_ran.set()

    worker = Worker(queue, {"slow": slow_handler, "t": handler}, dsn=dsn, batch_size=2, name="c", lease=3)
    worker.start(until_empty=not listening)
    try:
        assert started.wait(10)
        if listening:  # the listener runs LISTEN in a thread of its own: let it be listening
            _wait_for_listen(conn, queue.channel)  # LISTENed after the cancel channel
        assert cancel(queue, conn, [slow, after]) == {slow: "running", after: "running"}
        assert third_ran.wait(20)  # the worker went on past the cancelled batch
    finally:
        if listening:
            worker.stop(timeout=30)
        else:
            worker.join(timeout=30)
    assert saw == [True]
    assert ran == {slow: 1, third: 1}  # `after` was claimed with `slow`, cancelled, never started
    assert _statuses(conn, queue) == {slow: "cancelled", after: "cancelled", third: "completed"}


def test_a_cancel_of_a_running_job_is_announced_on_the_cancel_channel(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    pending, running = queue.enqueue_many(conn, [("t", {}), ("t", {})])
    queue.claim(conn, "w", limit=1)  # takes `pending` (the older): swap names to read well
    running, pending = pending, running
    with db.connect(dsn) as listener:
        listener.execute(psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel(queue))))
        cancel(queue, conn, [pending, running])
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)]
    assert got == [(channel(queue), str(running))]  # the pending one needs no worker told


def test_cancel_racing_with_claims_never_loses_a_job_between_states(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Four claimers and a canceller at once: a job cancelled while pending was claimed by
    nobody; one cancelled while running was claimed, and its completion is refused."""
    ids = queue.enqueue_many(conn, [("t", {})] * 1500)
    barrier = threading.Barrier(5)
    claimed: list[int] = []
    completed: list[int] = []
    results: dict[int, str] = {}
    lock = threading.Lock()

    def claimer(n: int) -> None:
        with db.connect(dsn) as own:
            barrier.wait()
            while jobs := queue.claim(own, f"c{n}", limit=3):
                with lock:
                    claimed.extend(job.id for job in jobs)
                done = [job for job in jobs if queue.complete(own, job)]
                with lock:
                    completed.extend(job.id for job in done)

    def canceller() -> None:
        order = ids[:]
        random.Random(2).shuffle(order)
        with db.connect(dsn) as own:
            barrier.wait()
            for start in range(0, len(order), 5):
                results.update(cancel(queue, own, order[start : start + 5]))

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=canceller))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == len(set(claimed))
    was_pending = {i for i, was in results.items() if was == "pending"}
    was_running = {i for i, was in results.items() if was == "running"}
    assert was_pending.isdisjoint(claimed)
    assert was_running <= set(claimed) and was_running.isdisjoint(completed)
    statuses = _statuses(conn, queue)
    assert {i for i, s in statuses.items() if s == "cancelled"} == set(results)
    assert {i for i, s in statuses.items() if s == "completed"} == set(completed)
    assert set(results) | set(completed) == set(ids)


@pytest.mark.parametrize("bad", ["7", 2**63, 1.5, None, True])
def test_a_bad_job_id_is_refused_before_anything_is_sent(
    conn: psycopg.Connection[Any], queue: Queue, bad: Any
) -> None:
    job_id = queue.enqueue(conn, "t")
    with pytest.raises(InvalidInputError, match="job id"):
        cancel(queue, conn, [job_id, bad])
    assert _statuses(conn, queue) == {job_id: "pending"}
