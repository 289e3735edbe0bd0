"""Retention: finished jobs archived, deleted, or dropped by period; nothing unfinished touched;
every archived job in exactly one table, also under a worker completing, failing, retrying and
a requeue of dead letters racing the archiver."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from typing import Any

import psycopg
import pytest

from pgqueue_lab import InvalidInputError, PermanentJobError, Queue, Worker, db, report, retention, sql
from pgqueue_lab.features.retention import Retention
from tests.faults import wait_for


def _ids(conn: psycopg.Connection[Any], queue: Queue, table: str, where: str = "true") -> dict[int, str]:
    """``{id: status}`` of the rows of ``jobs`` or ``jobs_archive``."""
    statement = sql.compose(
        f"SELECT id, status FROM {{schema}}.{table} WHERE {where} ORDER BY id", queue.schema
    )
    return {int(i): str(s) for i, s in conn.execute(statement).fetchall()}


def _has_archive(conn: psycopg.Connection[Any], queue: Queue) -> bool:
    return retention.archive_kind(conn, queue) is not None


def _mixed(conn: psycopg.Connection[Any], queue: Queue) -> dict[str, list[int]]:
    """Jobs in every state: 3 completed, 2 failed (dead letters), 2 running, 2 pending, 1 due later."""
    ids = queue.enqueue_many(conn, [("email", {"n": n}) for n in range(9)])
    later = queue.enqueue(conn, "email", {"later": True}, delay=3600)
    jobs = queue.claim(conn, "w", limit=7)
    assert [j.id for j in jobs] == ids[:7]
    queue.complete(conn, jobs[:3])
    for job in jobs[3:5]:
        assert queue.fail(conn, job, "boom", retry=False) == "failed"
    return {"completed": ids[:3], "failed": ids[3:5], "running": ids[5:7], "pending": [*ids[7:], later]}


def test_archive_moves_only_finished_jobs_each_into_exactly_one_table(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    states = _mixed(conn, queue)
    everything = sorted(i for ids in states.values() for i in ids)
    assert retention.archive(conn, queue) == 3  # completed only, by default
    archived = _ids(conn, queue, "jobs_archive")
    live = _ids(conn, queue, "jobs")
    assert archived == dict.fromkeys(states["completed"], "completed")
    assert not set(archived) & set(live)
    assert sorted([*archived, *live]) == everything
    # Dead letters too, when asked; still nothing pending or running.
    assert retention.archive(conn, queue, statuses=("completed", "failed")) == 2
    archived = _ids(conn, queue, "jobs_archive")
    live = _ids(conn, queue, "jobs")
    assert sorted(archived) == sorted(states["completed"] + states["failed"])
    assert set(live.values()) == {"running", "pending"}
    assert sorted([*archived, *live]) == everything
    # An archived dead letter cannot be requeued: it is not in jobs any more.
    assert queue.requeue(conn, states["failed"]) == []
    # The whole row is kept.
    row = conn.execute(
        sql.compose(
            "SELECT type, payload, attempts, errors FROM {schema}.jobs_archive WHERE id = %s", queue.schema
        ),
        [states["failed"][0]],
    ).fetchone()
    assert row is not None and row[0] == "email" and row[2] == 1 and row[3][0]["error"] == "boom"


def test_older_than_keeps_recent_finished_jobs(conn: psycopg.Connection[Any], queue: Queue) -> None:
    states = _mixed(conn, queue)
    assert retention.archive(conn, queue, older_than=3600) == 0
    assert not _ids(conn, queue, "jobs_archive")
    backdate = "UPDATE {schema}.jobs SET finished_at = now() - interval '2 hours' WHERE id = %s"
    conn.execute(sql.compose(backdate, queue.schema), [states["completed"][0]])
    assert retention.archive(conn, queue, older_than=3600) == 1
    assert list(_ids(conn, queue, "jobs_archive")) == [states["completed"][0]]


def test_prune_deletes_only_finished_jobs(conn: psycopg.Connection[Any], queue: Queue) -> None:
    states = _mixed(conn, queue)
    assert retention.prune(conn, queue, limit=2) == 2  # oldest first, a batch at a time
    assert retention.prune(conn, queue) == 1
    live = _ids(conn, queue, "jobs")
    assert sorted(live) == sorted(states["failed"] + states["running"] + states["pending"])
    assert not _has_archive(conn, queue)


def test_complete_deleting_is_fenced(conn: psycopg.Connection[Any], queue: Queue) -> None:
    queue.enqueue_many(conn, [("email", {}), ("email", {})])
    first, second = queue.claim(conn, "w", limit=2)
    assert retention.complete_deleting(conn, queue, [first]) == 1
    assert retention.complete_deleting(conn, queue, [first]) == 0  # already gone
    # A run whose job was rescued (token cleared) deletes nothing.
    conn.execute(sql.compose("UPDATE {schema}.jobs SET locked_until = now() - interval '1 s'", queue.schema))
    assert queue.rescue(conn) == [(second.id, "pending")]
    assert retention.complete_deleting(conn, queue, [second]) == 0
    assert _ids(conn, queue, "jobs") == {second.id: "pending"}


def test_a_partitioned_archive_drops_old_periods_whole(conn: psycopg.Connection[Any], queue: Queue) -> None:
    retention.create_archive(conn, queue, period=3600)  # one partition per hour
    ids = queue.enqueue_many(conn, [("email", {"n": n}) for n in range(6)])
    queue.complete(conn, queue.claim(conn, "w", limit=6))
    # Two jobs finished two days ago, two a day ago, two just now.
    for days, pair in ((2, ids[:2]), (1, ids[2:4])):
        statement = (
            "UPDATE {schema}.jobs SET finished_at = now() - make_interval(days => %s) WHERE id = ANY(%s)"
        )
        conn.execute(sql.compose(statement, queue.schema), [days, pair])
    assert retention.archive(conn, queue) == 6
    parts = retention.partitions(conn, queue, older_than=36 * 3600)
    assert len(parts) == 3  # (the two recent jobs may straddle an hour: at most one more)
    assert [expired for *_, expired in parts] == [True, False, False]
    assert retention.prune_archive(conn, queue, older_than=36 * 3600) == 2
    assert sorted(_ids(conn, queue, "jobs_archive")) == ids[2:]
    assert len(retention.partitions(conn, queue)) == 2
    # A second archive into existing partitions, and an empty one, both work.
    assert retention.archive(conn, queue) == 0


def test_reports_read_archived_jobs_too(conn: psycopg.Connection[Any], queue: Queue) -> None:
    states = _mixed(conn, queue)
    retention.archive(conn, queue, statuses=("completed", "failed"))
    frame = report.jobs_frame(conn, queue, ["status"])
    assert sorted(frame.index) == sorted(i for ids in states.values() for i in ids)
    counts = report.status_frame(conn, queue)["jobs"].to_dict()
    assert counts == {"pending": 3, "running": 2, "completed": 3, "failed": 2, "cancelled": 0}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c, q: retention.archive(c, q, statuses=("pending",)), "statuses must be finished states"),
        (lambda c, q: retention.prune(c, q, statuses="running"), "never archived or deleted"),
        (lambda c, q: retention.archive(c, q, older_than=-1), "older_than must be a finite number"),
        (lambda c, q: retention.archive(c, q, limit=0), "limit must be at least 1"),
        (lambda c, q: retention.create_archive(c, q, period=0.5), "period must be at least 1 second"),
        (lambda c, q: Retention(action="truncate"), "action must be 'archive' or 'delete'"),
        (lambda c, q: Retention(statuses=()), "statuses must be finished states"),
        (lambda c, q: Worker(q, {}, retention={"keep": 1}), "retention must be a Retention"),  # type: ignore[arg-type]
    ],
)
def test_bad_input_is_refused_before_the_database(dsn: str, call: Any, message: str) -> None:
    closed = db.connect(dsn)
    closed.close()  # anything sent would fail with OperationalError instead
    with pytest.raises(InvalidInputError, match=message):
        call(closed, Queue("test_retention_bad_input"))


def test_a_worker_archives_on_a_schedule(conn: psycopg.Connection[Any], queue: Queue, dsn: str) -> None:
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def handle(job: Any) -> None:
        with lock:
            ran[job.id] += 1

    policy = Retention(keep=0, every=0.05, batch=7)
    worker = Worker(queue, {"email": handle}, dsn=dsn, threads=2, batch_size=5, lease=3, retention=policy)
    worker.start()
    try:
        ids = queue.enqueue_many(conn, [("email", {"n": n}) for n in range(60)])
        wait_for(lambda: len(_ids(conn, queue, "jobs_archive")) == 60 if _has_archive(conn, queue) else False,
                 30, "every job archived by the housekeeper")  # fmt: skip
    finally:
        worker.stop(timeout=30)
    assert ran == Counter(ids)  # each ran once
    assert _ids(conn, queue, "jobs") == {}
    assert worker.retention is not None and worker.retention.moved == 60


def test_a_worker_deletes_on_a_schedule(conn: psycopg.Connection[Any], queue: Queue, dsn: str) -> None:
    worker = Worker(queue, {"email": lambda job: None}, dsn=dsn, lease=3,
                    retention=Retention(keep=0, every=0.05, action="delete"))  # fmt: skip
    worker.start()
    try:
        queue.enqueue_many(conn, [("email", {"n": n}) for n in range(20)])
        queue.enqueue(conn, "unknown", {})  # no handler: fails, retried, stays until done
        wait_for(lambda: set(_ids(conn, queue, "jobs").values()) <= {"pending", "failed"}
                 and len(_ids(conn, queue, "jobs")) == 1, 30, "the 20 jobs deleted")  # fmt: skip
    finally:
        worker.stop(timeout=30)
    assert not _has_archive(conn, queue)


def test_archiving_races_workers_retries_and_requeues(
    conn: psycopg.Connection[Any], queue: Queue, dsn: str
) -> None:
    """The adversary: an archiver taking completed and failed jobs as fast as it can, while a
    worker completes, fails (retryable and permanent) and retries jobs, and a requeuer gives dead
    letters a new life. Nothing unfinished is archived, nothing is lost, nothing is in both
    tables, and every archived completed job really ran to success."""
    successes: Counter[int] = Counter()
    lock = threading.Lock()
    rng = random.Random(11)
    fate = {}  # id -> what its first runs do

    def handle(job: Any) -> None:
        kind = fate.get(job.id, "ok")
        if kind == "flaky" and job.attempts < 3:
            raise RuntimeError("flaky")
        if kind == "dead" and job.id not in reviving:  # its first life ends as a dead letter
            raise PermanentJobError("dead on arrival")
        with lock:
            successes[job.id] += 1

    ids = queue.enqueue_many(conn, [("email", {"n": n}) for n in range(300)])
    for job_id in ids:
        fate[job_id] = rng.choice(["ok", "ok", "flaky", "dead"])
    stop = threading.Event()
    requeued: list[int] = []
    reviving: set[int] = set()  # dead letters about to be requeued: their next life succeeds
    errors: list[BaseException] = []

    def archiver() -> None:
        try:
            with db.connect(dsn) as c:
                while not stop.is_set():
                    retention.archive(c, queue, statuses=("completed", "failed"), limit=17)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def requeuer() -> None:
        try:
            with db.connect(dsn) as c:
                while not stop.is_set():
                    dead = [d["id"] for d in queue.dead_letters(c) if d["id"] not in reviving]
                    reviving.update(dead)
                    requeued.extend(queue.requeue(c, dead))
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=archiver), threading.Thread(target=requeuer)]
    worker = Worker(queue, {"email": handle}, dsn=dsn, threads=3, batch_size=4, lease=5, retry_delay=0.01,
                    max_delay=0.05)  # fmt: skip
    for t in threads:
        t.start()
    worker.start()
    try:
        wait_for(lambda: not queue.has_work(conn), 60, "every job finished")
        time.sleep(0.3)  # a requeue now and then still makes work: let it finish
        wait_for(lambda: not queue.has_work(conn), 60, "every requeued job finished")
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        worker.stop(timeout=30)
    assert not errors, errors
    retention.archive(conn, queue, statuses=("completed", "failed"))
    archived, live = _ids(conn, queue, "jobs_archive"), _ids(conn, queue, "jobs")
    assert not set(archived) & set(live), "a job in both tables"
    assert sorted([*archived, *live]) == ids, "a job lost"
    assert live == {}, f"finished jobs left behind: {live}"
    assert set(archived.values()) <= {"completed", "failed"}
    for job_id, status in archived.items():
        if status == "completed":
            assert successes[job_id] >= 1, f"job {job_id} archived as completed but never succeeded"
    # A dead letter either was archived first (its requeue found nothing: it stays failed, in
    # the archive) or was requeued first (archived later, after its second life succeeded).
    for job_id in requeued:
        assert archived[job_id] == "completed" and successes[job_id] == 1
    assert requeued, "the race never requeued a dead letter"
    assert [i for i in ids if fate[i] == "dead" and i not in requeued], (
        "the race never archived a dead letter"
    )


def test_two_housekeepers_archive_into_partitions_at_once(
    conn: psycopg.Connection[Any], queue: Queue, dsn: str
) -> None:
    """Two workers, each with the retention setting, archive into a partitioned archive with a
    partition per second (many partitions made while both run): runs take turns, no partition
    is made twice, every job ends in the archive exactly once."""
    retention.create_archive(conn, queue, period=1)
    policy = Retention(keep=0, every=0.01, batch=13, statuses=("completed", "failed"))
    ran: Counter[int] = Counter()
    lock = threading.Lock()

    def handle(job: Any) -> None:
        with lock:
            ran[job.id] += 1
        time.sleep(0.002)

    workers = [
        Worker(
            queue,
            {"email": handle},
            dsn=dsn,
            threads=2,
            batch_size=3,
            lease=5,
            retention=policy,
            name=f"w{n}",
        )
        for n in range(2)
    ]
    for w in workers:
        w.start()
    try:
        ids: list[int] = []
        for _ in range(6):  # jobs finishing over a few seconds: several partitions
            ids += queue.enqueue_many(conn, [("email", {"n": n}) for n in range(40)])
            time.sleep(0.4)
        wait_for(lambda: len(_ids(conn, queue, "jobs_archive")) == len(ids), 60, "every job archived")
    finally:
        for w in workers:
            w.stop(timeout=30)
    assert not any(w.stats.errors for w in workers)
    archived = _ids(conn, queue, "jobs_archive")
    assert sorted(archived) == ids and _ids(conn, queue, "jobs") == {}
    assert set(archived.values()) == {"completed"} and ran == Counter(ids)
    parts = retention.partitions(conn, queue)
    assert len(parts) >= 2 and len({name for name, *_ in parts}) == len(parts)
    moved = sum(w.retention.moved for w in workers if w.retention is not None)
    assert moved == len(ids)
