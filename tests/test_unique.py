"""Unique jobs: one pending or running job per unique_key, however many producers race."""

from __future__ import annotations

import random
import threading
from collections import Counter, defaultdict
from typing import Any

import psycopg
import pytest
from faults import wait_for

from pgqueue_lab import InvalidInputError, Queue, db
from pgqueue_lab.core.queue import NewJob
from pgqueue_lab.features.cancel import cancel

THREADS = 8
KEYS = [f"report:{n}" for n in range(40)]


def _live_jobs_per_key(conn: psycopg.Connection[Any], queue: Queue) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for job in queue.jobs(conn):
        key = job["payload"].get("key")
        if job["status"] in ("pending", "running") and key is not None:
            counts[key] += 1
    return dict(counts)


@pytest.mark.parametrize("path", ["enqueue", "enqueue_many"])
def test_eight_producers_racing_with_the_same_keys_make_one_job_per_key(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, path: str
) -> None:
    barrier = threading.Barrier(THREADS)
    ledger: dict[int, dict[str, int]] = {}  # thread -> key -> id it was given
    errors: list[BaseException] = []

    def producer(n: int) -> None:
        keys = KEYS[:]
        random.Random(n).shuffle(keys)
        mine: dict[str, int] = {}
        try:
            with db.connect(dsn) as own:
                barrier.wait()
                if path == "enqueue":
                    for key in keys:
                        mine[key] = queue.enqueue(own, "report", {"key": key}, unique_key=key)
                else:
                    for start in range(0, len(keys), 8):
                        chunk = keys[start : start + 8]
                        batch = [NewJob("report", {"key": k}, unique_key=k) for k in chunk]
                        batch.insert(2, NewJob("plain", {"n": n}))  # a keyless job in the middle
                        ids = queue.enqueue_many(own, batch)
                        del ids[2]
                        mine.update(zip(chunk, ids, strict=True))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        ledger[n] = mine

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for key in KEYS:
        given = {ledger[n][key] for n in range(THREADS)}
        assert len(given) == 1, f"{key}: producers were given different jobs {given}"
    assert _live_jobs_per_key(conn, queue) == dict.fromkeys(KEYS, 1)
    plain = [j for j in queue.jobs(conn) if j["type"] == "plain"]
    assert len(plain) == (THREADS * 5 if path == "enqueue_many" else 0)  # keyless jobs always go in


def test_a_running_job_holds_its_key_and_a_finished_one_frees_it(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    first = queue.enqueue(conn, "t", unique_key="k")
    assert queue.enqueue(conn, "t", unique_key="k") == first
    (job,) = queue.claim(conn, "w")
    assert queue.enqueue(conn, "t", unique_key="k") == first  # running still holds it
    assert queue.complete(conn, job) == 1
    second = queue.enqueue(conn, "t", unique_key="k")
    assert second != first  # completed: the key is free
    assert cancel(queue, conn, second) == {second: "pending"}
    third = queue.enqueue(conn, "t", unique_key="k")
    assert third not in (first, second)  # cancelled frees it too
    (job,) = queue.claim(conn, "w")
    assert queue.fail(conn, job, "boom", retry=False) == "failed"
    assert queue.enqueue(conn, "t", unique_key="k") not in (first, second, third)  # and a dead letter


def test_a_batch_repeating_a_key_inserts_it_once_and_keeps_the_order(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    held = queue.enqueue(conn, "t", {"n": -1}, unique_key="old")
    ids = queue.enqueue_many(
        conn,
        [
            NewJob("t", {"n": 0}),
            NewJob("t", {"n": 1}, unique_key="a"),
            NewJob("t", {"n": 2}, unique_key="old"),
            NewJob("t", {"n": 3}, unique_key="a"),
            {"type": "t", "payload": {"n": 4}, "concurrency_key": "c"},
            ("t", {"n": 5}),
        ],
    )
    assert ids[2] == held and ids[1] == ids[3]
    by_id = {job["id"]: job["payload"]["n"] for job in queue.jobs(conn)}
    assert [by_id[i] for i in ids] == [0, 1, -1, 1, 4, 5]
    assert len(by_id) == 5


def test_producers_racing_with_a_worker_that_finishes_the_key_never_make_two(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Enqueue-with-key against claim+complete, for a second: never two live jobs of a key,
    never an error, and every id a producer is given is a job that held the key."""
    stop = threading.Event()
    given: list[int] = []
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            with db.connect(dsn) as own:
                while not stop.is_set():
                    given.append(queue.enqueue(own, "t", {"key": "k"}, unique_key="k"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def finisher() -> None:
        try:
            with db.connect(dsn) as own:
                while not stop.is_set():
                    jobs = queue.claim(own, "w")
                    queue.complete(own, jobs)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=producer) for _ in range(4)] + [threading.Thread(target=finisher)]
    for t in threads:
        t.start()
    stop.wait(1.5)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert _live_jobs_per_key(conn, queue) in ({}, {"k": 1})  # the finisher may have taken the last
    assert set(given) <= {job["id"] for job in queue.jobs(conn)}
    assert len(queue.jobs(conn)) > 2  # the key was freed and taken again


@pytest.mark.parametrize("bad", ["", " k", 7, "a\x00b"])
def test_a_bad_unique_or_concurrency_key_is_refused_before_anything_is_sent(
    conn: psycopg.Connection[Any], queue: Queue, bad: Any
) -> None:
    with pytest.raises(InvalidInputError, match="unique_key"):
        queue.enqueue(conn, "t", unique_key=bad)
    with pytest.raises(InvalidInputError, match=r"concurrency_key .*job #1 of the batch"):
        queue.enqueue_many(conn, [NewJob("t"), NewJob("t", concurrency_key=bad)])
    assert queue.jobs(conn) == []


def test_batches_and_single_enqueues_racing_with_claims_survive_their_deadlocks(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Found by attacking the feature: a batch and a single enqueue of the same keys, while a
    worker claims and completes jobs holding them, can wait for each other in a cycle.
    PostgreSQL ends one; the helper runs it again, so no producer sees the deadlock."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def producer(n: int) -> None:
        rnd = random.Random(n)
        try:
            with db.connect(dsn) as own:
                while not stop.is_set():
                    if rnd.random() < 0.5:
                        batch = [
                            NewJob("t", unique_key=f"k{rnd.randrange(10)}")
                            for _ in range(rnd.randrange(1, 8))
                        ]
                        queue.enqueue_many(own, batch)
                    else:
                        queue.enqueue(own, "t", unique_key=f"k{rnd.randrange(10)}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def finisher() -> None:
        try:
            with db.connect(dsn) as own:
                while not stop.is_set():
                    queue.complete(own, queue.claim(own, "w", limit=5))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(n,)) for n in range(4)]
    threads.append(threading.Thread(target=finisher))
    for t in threads:
        t.start()
    stop.wait(4)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    live = Counter(
        j["unique_key"] for j in _jobs_with_keys(conn, queue) if j["status"] in ("pending", "running")
    )
    assert set(live.values()) <= {1}


def _jobs_with_keys(conn: psycopg.Connection[Any], queue: Queue) -> list[dict[str, Any]]:
    query = psycopg.sql.SQL("SELECT unique_key, status FROM {}.jobs").format(
        psycopg.sql.Identifier(queue.schema)
    )
    return [{"unique_key": k, "status": s} for k, s in conn.execute(query).fetchall()]


def test_copies_of_a_key_share_one_id_when_the_batch_falls_back_job_by_job(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by attacking the feature: a batch repeating a key whose holder committed after the
    batch's statement began resolves the key job by job. If the holder finishes between two
    copies, a second lookup would insert a new job: the copies must share the first one's id."""
    from pgqueue_lab import unique

    holder = db.connect(dsn)
    holder.execute("BEGIN")
    queue.enqueue(holder, "t", unique_key="k")  # uncommitted: the batch's insert waits for it
    finished: list[int] = []
    real = unique.enqueue_one

    def one_then_finish(*args: Any) -> int:
        job_id = real(*args)
        with db.connect(dsn) as other:  # a fast worker finishes the job at once
            queue.complete(other, queue.claim(other, "w"))
        finished.append(job_id)
        return job_id

    monkeypatch.setattr(unique, "enqueue_one", one_then_finish)
    result: list[list[int]] = []
    batch = threading.Thread(
        target=lambda: result.append(queue.enqueue_many(conn, [NewJob("t", unique_key="k")] * 3))
    )
    batch.start()
    waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = %s"
    pid = conn.info.backend_pid
    with db.connect(dsn) as watcher:
        wait_for(lambda: watcher.execute(waiting, (pid,)).fetchone()[0] > 0, 10, "the batch to wait")
    holder.execute("COMMIT")
    holder.close()
    batch.join(10)
    assert finished != []  # the fallback ran
    assert result == [[finished[0]] * 3]
    assert [j["id"] for j in queue.jobs(conn)] == [finished[0]]  # no second job of the key


def test_requeue_skips_failed_jobs_whose_key_is_held_and_requeues_the_rest(
    conn: psycopg.Connection[Any], queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by attacking the feature: requeueing a failed job whose key a new job holds raised
    UniqueViolation and requeued nothing. Two failed jobs of one key: the lower id is requeued."""
    a = queue.enqueue(conn, "t", unique_key="k", max_attempts=1)
    other = queue.enqueue(conn, "t", max_attempts=1)
    c = queue.enqueue(conn, "t", unique_key="k2", max_attempts=1)
    for job in queue.claim(conn, "w", limit=3):
        queue.fail(conn, job, "boom")
    d = queue.enqueue(conn, "t", unique_key="k2", max_attempts=1)  # k2 was freed: a second job
    queue.fail(conn, queue.claim(conn, "w"), "boom")
    holder = queue.enqueue(conn, "t", unique_key="k")  # k is free again: a new job holds it
    assert queue.requeue(conn, [a, other, c, d]) == [other, c]
    status = {j["id"]: j["status"] for j in queue.jobs(conn)}
    assert status == {a: "failed", other: "pending", c: "pending", d: "failed", holder: "pending"}
    assert f"jobs [{a}, {d}] not requeued" in caplog.text
