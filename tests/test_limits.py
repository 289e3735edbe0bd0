"""Per-key concurrency limits and fairness, enforced in the claim itself."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from pgqueue_lab import InvalidInputError, Job, Queue, Worker, db
from pgqueue_lab.core.queue import NewJob
from pgqueue_lab.features.cancel import cancel


def test_eight_worker_threads_never_run_more_than_k_jobs_of_a_key(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    keys = ["acme", "globex", "initech"]
    ids = queue.enqueue_many(conn, [NewJob("t", {"n": n}, concurrency_key=keys[n % 3]) for n in range(90)])
    ids += queue.enqueue_many(conn, [NewJob("t", {"n": n}) for n in range(30)])  # keyless: no limit
    running: Counter[str | None] = Counter()
    peak: Counter[str | None] = Counter()
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(job: Job) -> None:
        key = keys[job.payload["n"] % 3] if job.id <= ids[89] else None
        with lock:
            running[key] += 1
            peak[key] = max(peak[key], running[key])
            ran[job.id] += 1
        time.sleep(0.005)
        with lock:
            running[key] -= 1

    seen: Counter[str] = Counter()  # the most running jobs of each key the database showed
    done = threading.Event()

    def monitor() -> None:
        query = psycopg.sql.SQL(
            "SELECT concurrency_key, count(*) FROM {}.jobs WHERE status = 'running' GROUP BY 1"
        ).format(psycopg.sql.Identifier(queue.schema))
        with db.connect(dsn) as own:
            while not done.is_set():
                for key, n in own.execute(query).fetchall():
                    seen[key] = max(seen[key], n)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    try:
        Worker(queue, {"t": handler}, dsn=dsn, threads=8, batch_size=4, per_key=2, name="k").run()
    finally:
        done.set()
        watcher.join()
    assert set(ran) == set(ids) and set(ran.values()) == {1}
    assert all(peak[key] <= 2 for key in keys), peak
    assert {key: seen[key] for key in keys} == dict.fromkeys(keys, 2)  # reached, never passed


def test_limited_claims_racing_take_at_most_k_per_key(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Eight claimers released at once, nothing completed: exactly K jobs of each key run.
    Without the claims taking turns, each would count 0 running and take one."""
    for _ in range(5):  # rounds: a race has several chances to show
        queue.enqueue_many(conn, [NewJob("t", concurrency_key=k) for k in "ab" for _ in range(20)])
        barrier = threading.Barrier(8)
        claimed: list[Job] = []
        lock = threading.Lock()

        def claimer(n: int, barrier: threading.Barrier, claimed: list[Job], lock: threading.Lock) -> None:
            with db.connect(dsn) as own:
                barrier.wait()
                for _ in range(3):
                    jobs = queue.claim(own, f"c{n}", limit=2, per_key=3)
                    with lock:
                        claimed.extend(jobs)

        threads = [threading.Thread(target=claimer, args=(n, barrier, claimed, lock)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        keys = Counter(
            row[0]
            for row in conn.execute(
                psycopg.sql.SQL("SELECT concurrency_key FROM {}.jobs WHERE status = 'running'").format(
                    psycopg.sql.Identifier(queue.schema)
                )
            )
        )
        assert keys == {"a": 3, "b": 3} and len(claimed) == 6
        queue.complete(conn, claimed)
        conn.execute(psycopg.sql.SQL("DELETE FROM {}.jobs").format(psycopg.sql.Identifier(queue.schema)))


def test_limited_claims_racing_with_new_urgent_jobs_never_pass_the_limit(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """The race the advisory lock closes: claims whose snapshots differ by a new job that goes
    first. Eight claimers spin while a producer keeps enqueueing ever more urgent jobs of one
    key, and a releaser cancels whatever runs (freeing the slot again and again), noting how
    many jobs of the key were running each time. With a limit of 1, never more than one."""
    stop = threading.Event()
    errors: list[BaseException] = []
    seen: list[int] = []
    running = psycopg.sql.SQL("SELECT id FROM {}.jobs WHERE status = 'running'").format(
        psycopg.sql.Identifier(queue.schema)
    )

    def guarded(body: Any) -> Any:
        def run(*args: Any) -> None:
            try:
                body(*args)
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        return run

    @guarded
    def producer() -> None:
        with db.connect(dsn) as own:
            for n in range(1, 600):
                queue.enqueue(own, "t", priority=n, concurrency_key="k")

    @guarded
    def releaser() -> None:
        with db.connect(dsn) as own:
            while not stop.is_set():
                with own.transaction():
                    ids = [r[0] for r in own.execute(running).fetchall()]
                    seen.append(len(cancel(queue, own, ids)))
                time.sleep(0.002)

    @guarded
    def claimer(n: int) -> None:
        with db.connect(dsn) as own:
            while not stop.is_set():
                queue.claim(own, f"c{n}", limit=1, per_key=1)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
    threads += [threading.Thread(target=releaser), threading.Thread(target=producer)]
    for t in threads:
        t.start()
    threads[-1].join()
    # The race needs the slot taken and freed many times: on a loaded machine, wait for it.
    deadline = time.monotonic() + 60
    while seen.count(1) <= 20 and time.monotonic() < deadline and not errors:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert max(seen) == 1 and seen.count(1) > 20  # the slot was taken and freed many times
    assert dict(queue.status_counts(conn))["running"] <= 1


def test_a_key_at_its_limit_does_not_block_the_keys_behind_it(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Head-of-line blocking (pg-boss#756): 50 jobs of a busy key first, then 5 of another."""
    busy = queue.enqueue_many(conn, [NewJob("t", concurrency_key="busy")] * 50)
    other = queue.enqueue_many(conn, [NewJob("t", concurrency_key="other")] * 5)
    first = queue.claim(conn, "w", limit=10, per_key=1)
    assert [job.id for job in first] == [busy[0], *other[:1]]
    second = queue.claim(conn, "w", limit=10, per_key=1)
    assert second == []  # both keys at their limit: the rest of the batch stays empty
    queue.complete(conn, first)
    assert [job.id for job in queue.claim(conn, "w", limit=10, per_key=2)] == [*busy[1:3], *other[1:3]]


def test_fair_mode_serves_a_small_tenant_among_a_big_one(conn: psycopg.Connection[Any], queue: Queue) -> None:
    big = queue.enqueue_many(conn, [NewJob("t", concurrency_key="big")] * 1000)
    small = queue.enqueue_many(conn, [NewJob("t", concurrency_key="small")] * 10)
    plain_order = [job.id for job in queue.claim(conn, "w", limit=20)]
    assert plain_order == big[:20]  # the plain claim: the small tenant waits behind 1000 jobs
    order = []
    for _ in range(20):  # one job per claim, each completed before the next claim
        jobs = queue.claim(conn, "w", limit=1, fair=True)
        order += [job.id for job in jobs]
        queue.complete(conn, jobs)
    assert order[1::2] == small and order[0::2] == big[20:30]  # turn and turn about
    batch = queue.claim(conn, "w", limit=6, fair=True)
    assert [job.id for job in batch] == big[30:36]  # the small tenant has nothing left


@pytest.mark.parametrize("per_key", [None, 3])
def test_eight_threads_in_fair_mode_run_every_job_once(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, per_key: int | None
) -> None:
    """Concurrent fair claims record the keys they served in one order: no deadlock between
    them, and every job of 30 tenants runs exactly once."""
    ids = queue.enqueue_many(conn, [NewJob("t", concurrency_key=f"tenant-{n % 30}") for n in range(1500)])
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            ran[job.id] += 1

    worker = Worker(queue, {"t": handler}, dsn=dsn, threads=8, batch_size=10, fair=True, per_key=per_key)
    stats = worker.run()
    assert set(ran) == set(ids) and set(ran.values()) == {1} and stats.errors == []


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_a_bad_per_key_limit_is_refused(conn: psycopg.Connection[Any], queue: Queue, bad: Any) -> None:
    queue.enqueue(conn, "t", concurrency_key="k")
    with pytest.raises(InvalidInputError, match="per_key"):
        queue.claim(conn, "w", per_key=bad)
    with pytest.raises(InvalidInputError, match="per_key"):
        Worker(queue, {"t": print}, per_key=bad)
    assert dict(queue.status_counts(conn))["pending"] == 1
