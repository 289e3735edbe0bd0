"""Exactly-once claiming under many threads: every job runs once, none is lost."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg

from pgqueue_lab import Job, Queue, Worker, db

THREADS = 8
JOBS = THREADS * 20_000  # 20,000 jobs per thread


def test_worker_threads_run_every_job_exactly_once(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    ids = [
        job_id
        for start in range(0, JOBS, 20_000)
        for job_id in queue.enqueue_many(conn, [("noop", {"n": i}) for i in range(start, start + 20_000)])
    ]
    ledger: Counter[int] = Counter()
    lock = threading.Lock()

    def noop(job: Job) -> None:
        with lock:
            ledger[job.id] += 1

    stats = Worker(queue, {"noop": noop}, dsn=dsn, threads=THREADS, batch_size=50, name="t").run()

    assert sorted(ledger) == sorted(ids), "some job was never run"
    repeated = {job_id: n for job_id, n in ledger.items() if n != 1}
    assert repeated == {}, f"jobs run more than once: {list(repeated)[:10]}"
    assert stats.total_completed == JOBS and stats.total_failed == 0
    assert queue.status_counts(conn) == [
        ("pending", 0),
        ("running", 0),
        ("completed", JOBS),
        ("failed", 0),
        ("cancelled", 0),
    ]
    assert len(stats.completed) == THREADS  # every thread took part
    rows = conn.execute(
        psycopg.sql.SQL("SELECT count(DISTINCT worker_id) FROM {}.jobs").format(
            psycopg.sql.Identifier(queue.schema)
        )
    ).fetchone()
    assert rows == (THREADS,)


def test_claims_released_together_never_overlap(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Raw claim() calls from threads released at once by a barrier: disjoint, complete."""
    ids = queue.enqueue_many(conn, [("t", {})] * 2_000)
    barrier = threading.Barrier(THREADS)
    claimed: dict[int, list[int]] = {}

    def claimer(n: int) -> None:
        mine: list[int] = []
        with db.connect(dsn) as own:
            barrier.wait()
            while batch := queue.claim(own, f"c{n}", limit=7):
                mine += [j.id for j in batch]
        claimed[n] = mine

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [job_id for mine in claimed.values() for job_id in mine]
    assert len(every) == len(set(every)), "a job was claimed twice"
    assert sorted(every) == ids
