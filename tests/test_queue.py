"""The queue's operations against a real PostgreSQL: lifecycle, JSONB, batches, transactions."""

from __future__ import annotations

import time
import uuid
from typing import Any

import psycopg
import pytest

from pgqueue_lab import NewJob, Queue, db, sql


def test_create_is_idempotent_and_drop_removes_everything(conn: psycopg.Connection[Any]) -> None:
    q = Queue("test_create_drop")
    q.drop(conn)
    q.create(conn)
    q.create(conn)  # second time: no error, nothing duplicated
    indexes = conn.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s ORDER BY indexname", [q.schema]
    ).fetchall()
    assert [r[0] for r in indexes] == [
        "jobs_claim_idx",
        "jobs_lease_idx",
        "jobs_pkey",
        "jobs_unique_idx",
        "key_turns_pkey",
        "paused_queues_pkey",
        "schedules_pkey",
    ]
    q.drop(conn)
    left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [q.schema]).fetchone()
    assert left == (0,)
    q.drop(conn)  # idempotent


def test_status_is_enforced_by_the_database(conn: psycopg.Connection[Any], queue: Queue) -> None:
    job_id = queue.enqueue(conn, "email", {"to": "a@example.com"})
    with pytest.raises(psycopg.errors.CheckViolation):
        conn.execute(
            sql.compose("UPDATE {schema}.jobs SET status = 'done' WHERE id = %s", queue.schema), [job_id]
        )


def test_lifecycle_records_timestamps_attempts_and_worker(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    job_id = queue.enqueue(conn, "email", {"to": "alice@example.com"})
    (job,) = queue.jobs(conn)
    assert (job["id"], job["status"], job["attempts"]) == (job_id, "pending", 0)
    assert job["created_at"] is not None and job["started_at"] is None and job["finished_at"] is None

    (claimed,) = queue.claim(conn, "w-1")
    assert (claimed.id, claimed.type, claimed.payload, claimed.attempts) == (
        job_id,
        "email",
        {"to": "alice@example.com"},
        1,
    )
    (job,) = queue.jobs(conn)
    assert (job["status"], job["worker_id"]) == ("running", "w-1")
    assert job["started_at"] >= job["created_at"] and job["finished_at"] is None

    assert queue.complete(conn, claimed) == 1
    (job,) = queue.jobs(conn)
    assert job["status"] == "completed"
    assert job["finished_at"] >= job["started_at"]
    assert queue.complete(conn, claimed) == 0  # not running any more: nothing changes
    assert queue.claim(conn, "w-1") == []


def test_fail_records_the_error_and_retries_until_max_attempts(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    queue.enqueue(conn, "flaky", max_attempts=2)
    (first,) = queue.claim(conn, "w")
    assert queue.fail(conn, first, "boom 1", retry_delay=0) == "pending"
    (job,) = queue.jobs(conn)
    assert (job["status"], job["attempts"], job["last_error"]) == ("pending", 1, "boom 1")
    (second,) = queue.claim(conn, "w")
    assert queue.fail(conn, second, "boom 2", retry_delay=0) == "failed"
    (job,) = queue.jobs(conn)
    assert (job["status"], job["attempts"], job["last_error"]) == ("failed", 2, "boom 2")
    assert job["finished_at"] is not None
    errors = conn.execute(sql.compose("SELECT errors FROM {schema}.jobs", queue.schema)).fetchone()
    assert errors == ([{"attempt": 1, "error": "boom 1"}, {"attempt": 2, "error": "boom 2"}],)
    assert queue.fail(conn, second, "again") is None  # not running: untouched


def test_retry_waits_for_its_backoff(conn: psycopg.Connection[Any], queue: Queue) -> None:
    queue.enqueue(conn, "flaky", max_attempts=3)
    (job,) = queue.claim(conn, "w")
    queue.fail(conn, job, "boom", retry_delay=60)
    assert queue.claim(conn, "w") == []  # due in ~60 s, not now
    delay = conn.execute(
        sql.compose("SELECT extract(epoch FROM run_at - now()) FROM {schema}.jobs", queue.schema)
    ).fetchone()
    assert delay is not None and 60 * 0.9 - 1 <= float(delay[0]) <= 60 * 1.1


def test_jsonb_round_trip_nested_and_unicode(conn: psycopg.Connection[Any], queue: Queue) -> None:
    payload = {
        "to": "zoë@example.com",
        "subject": "Grüße 👋 — 你好",
        "nested": {"list": [1, 2.5, None, True, {"deep": ["x"]}], "empty": {}},
        "quote": 'it\'s "quoted" \\ backslash',
    }
    queue.enqueue(conn, "email", payload)
    (job,) = queue.claim(conn, "w")
    assert job.payload == payload
    row = conn.execute(
        sql.compose("SELECT payload->'nested'->'list'->4->'deep'->>0 FROM {schema}.jobs", queue.schema)
    ).fetchone()
    assert row == ("x",)


def test_payload_defaults_to_an_empty_object(conn: psycopg.Connection[Any], queue: Queue) -> None:
    queue.enqueue(conn, "ping")
    (job,) = queue.claim(conn, "w")
    assert job.payload == {}


def test_enqueue_many_in_one_statement_keeps_order(conn: psycopg.Connection[Any], queue: Queue) -> None:
    jobs: list[Any] = [("email", {"n": i}) for i in range(500)]
    jobs.append(NewJob("report", {"n": 500}, priority=5))
    jobs.append({"type": "report", "payload": {"n": 501}, "queue": "reports"})
    ids = queue.enqueue_many(conn, jobs)
    assert len(ids) == 502 and ids == sorted(ids)
    rows = queue.jobs(conn)
    assert [r["payload"]["n"] for r in rows] == list(range(502))
    assert (rows[500]["priority"], rows[501]["queue"]) == (5, "reports")
    assert queue.enqueue_many(conn, []) == []


def test_enqueue_many_stores_every_field_exactly(conn: psycopg.Connection[Any], queue: Queue) -> None:
    """The batch travels as COPY text: backslashes, tabs, newlines, quotes and non-ASCII text in
    payloads, types and queue names arrive unchanged; each job's own delay, priority and
    max_attempts too, and ids follow the given order."""
    odd = 'tab\there, line\nbreak, back\\slash \\N, "quoted", \\u0000 as text, é ☃ 𝄞'
    jobs = [
        NewJob("t", {"text": odd, "list": [1.5, None, True], "nested": {"k": odd}}),
        NewJob("type\\with\tescapes", odd, queue="q\\ueue", priority=-3, delay=3600, max_attempts=9),
        NewJob("t", [odd], delay=60),
        NewJob("t", 42),
    ]
    ids = queue.enqueue_many(conn, jobs)
    assert ids == sorted(ids) and len(set(ids)) == 4
    rows = conn.execute(
        sql.compose(
            "SELECT id, type, queue, payload, priority, max_attempts,"
            " round(extract(epoch FROM run_at - created_at)) FROM {schema}.jobs ORDER BY id",
            queue.schema,
        )
    ).fetchall()
    assert [r[0] for r in rows] == ids
    assert [r[1:] for r in rows] == [
        (j.type, j.queue, j.payload, j.priority, j.max_attempts, j.delay) for j in jobs
    ]


def test_transactional_enqueue_commits_or_rolls_back_with_the_caller(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    with pytest.raises(RuntimeError), conn.transaction():
        queue.enqueue(conn, "email", {"to": "ghost@example.com"})
        queue.enqueue_many(conn, [("email", {"to": "ghost2@example.com"})])
        raise RuntimeError("the order failed, so no email")
    assert queue.jobs(conn) == []
    with conn.transaction():
        queue.enqueue(conn, "email", {"to": "real@example.com"})
        queue.enqueue(conn, "email", {"to": "real2@example.com"})
    assert len(queue.jobs(conn)) == 2


def test_claim_order_priority_then_fifo_and_batch(conn: psycopg.Connection[Any], queue: Queue) -> None:
    low = queue.enqueue_many(conn, [("t", {"i": i}) for i in range(3)])
    high = queue.enqueue(conn, "t", {"i": "high"}, priority=10)
    batch = queue.claim(conn, "w", limit=3)
    assert [j.id for j in batch] == [high, low[0], low[1]]
    assert [j.id for j in queue.claim(conn, "w", limit=10)] == [low[2]]


def test_delayed_jobs_and_named_queues(conn: psycopg.Connection[Any], queue: Queue) -> None:
    later = queue.enqueue(conn, "t", delay=3600)
    mail = queue.enqueue(conn, "t", queue="mail")
    other = queue.enqueue(conn, "t", queue="other")
    assert [j.id for j in queue.claim(conn, "w", queues=["mail"], limit=10)] == [mail]
    assert [j.id for j in queue.claim(conn, "w", limit=10)] == [other]
    assert later not in [j["id"] for j in queue.jobs(conn) if j["status"] == "running"]


def test_release_returns_jobs_without_counting_an_attempt(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    ids = queue.enqueue_many(conn, [("t", {}), ("t", {})])
    assert queue.release(conn, queue.claim(conn, "w", limit=2)) == ids
    assert [(j["status"], j["attempts"], j["worker_id"]) for j in queue.jobs(conn)] == [
        ("pending", 0, None)
    ] * 2


def test_status_counts_lists_every_status(conn: psycopg.Connection[Any], queue: Queue) -> None:
    assert queue.status_counts(conn) == [
        ("pending", 0),
        ("running", 0),
        ("completed", 0),
        ("failed", 0),
        ("cancelled", 0),
    ]
    queue.enqueue_many(conn, [("t", {})] * 3)
    (job,) = queue.claim(conn, "w")
    queue.complete(conn, job)
    queue.claim(conn, "w")
    assert queue.status_counts(conn) == [
        ("pending", 1),
        ("running", 1),
        ("completed", 1),
        ("failed", 0),
        ("cancelled", 0),
    ]


def test_report_frames(conn: psycopg.Connection[Any], queue: Queue) -> None:
    from pgqueue_lab import report

    queue.enqueue_many(conn, [("email", {"to": "a"}), ("report", {})])
    queue.claim(conn, "w")
    df = report.jobs_frame(conn, queue, ["type", "status"])
    assert df.to_dict("records") == [
        {"type": "email", "status": "running"},
        {"type": "report", "status": "pending"},
    ]
    counts = report.status_frame(conn, queue)
    assert counts["jobs"].to_dict() == {
        "pending": 1,
        "running": 1,
        "completed": 0,
        "failed": 0,
        "cancelled": 0,
    }


def test_claim_uses_the_partial_index(conn: psycopg.Connection[Any], queue: Queue) -> None:
    queue.enqueue_many(conn, [("t", {})] * 2000)
    conn.execute(sql.compose("ANALYZE {schema}.jobs", queue.schema))
    query = sql.compose(sql.CLAIM, queue.schema)
    params = {"queues": None, "limit": 10, "worker_id": "w", "lease": 60.0, "token": uuid.uuid4()}
    with conn.transaction():
        plan = conn.execute(psycopg.sql.SQL("EXPLAIN ") + query, params).fetchall()
        raise psycopg.Rollback()  # EXPLAIN alone does not run the UPDATE; roll back anyway
    assert any("jobs_claim_idx" in line[0] for line in plan), plan


def test_next_due_is_none_when_nothing_pends(conn: psycopg.Connection[Any], queue: Queue) -> None:
    assert queue.next_due(conn) is None  # an idle worker then sleeps its full poll interval
    queue.enqueue(conn, "t", delay=60)
    due = queue.next_due(conn)
    assert due is not None and 55 < due <= 60
    queue.enqueue(conn, "t")
    assert queue.next_due(conn) == 0.0


def test_vacuum_removes_dead_rows(conn: psycopg.Connection[Any], queue: Queue) -> None:
    queue.enqueue_many(conn, [("t", {})] * 200)
    queue.complete(conn, queue.claim(conn, "w", limit=200))
    queue.vacuum(conn)
    query = sql.compose("SELECT count(*) FROM {schema}.jobs", queue.schema)
    assert conn.execute(query).fetchone() == (200,)  # live rows stay


def test_every_write_is_fenced_by_the_claim_token(conn: psycopg.Connection[Any], queue: Queue) -> None:
    """A's lease lapses, the job is rescued and B claims it: nothing A does changes it."""
    queue.enqueue_many(conn, [("t", {})] * 2)
    a_first, a_second = queue.claim(conn, "A", limit=2, lease=0.0)
    time.sleep(0.01)
    assert [status for _, status in queue.rescue(conn)] == ["pending", "pending"]
    b_first, b_second = queue.claim(conn, "B", limit=2)
    assert {b_first.token, b_second.token}.isdisjoint({a_first.token, a_second.token})

    assert queue.heartbeat(conn, [a_first, a_second], lease=60) == []
    assert queue.complete(conn, a_first) == 0
    assert queue.fail(conn, a_second, "late") is None
    assert queue.release(conn, [a_first, a_second]) == []
    rows = [(j["status"], j["worker_id"], j["attempts"], j["last_error"]) for j in queue.jobs(conn)]
    expired = "lease expired: worker A stopped responding"
    assert rows == [("running", "B", 2, expired)] * 2

    assert queue.heartbeat(conn, [b_first, b_second], lease=60) == [b_first.id, b_second.id]
    assert queue.complete(conn, [b_second, b_first]) == 2


def test_claim_skips_a_locked_row_instead_of_waiting(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    first, second = queue.enqueue_many(conn, [("t", {}), ("t", {})])
    with db.connect(dsn) as holder, holder.transaction():
        holder.execute(
            sql.compose("SELECT 1 FROM {schema}.jobs WHERE id = %s FOR UPDATE", queue.schema), [first]
        )
        conn.execute("SET statement_timeout = '2s'")  # a claim that waited for the lock would fail
        try:
            assert [job.id for job in queue.claim(conn, "w", limit=2)] == [second]
        finally:
            conn.execute("RESET statement_timeout")


def test_completing_jobs_of_several_claims_is_all_or_nothing(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    queue.enqueue_many(conn, [("t", {})] * 4)
    first = queue.claim(conn, "w", limit=2)
    second = queue.claim(conn, "w", limit=2)
    refuse = f"IF NEW.id = {second[-1].id} AND NEW.status = 'completed' THEN RAISE EXCEPTION 'no'; END IF;"
    conn.execute(
        sql.compose(
            "CREATE FUNCTION {schema}.t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            + refuse
            + " RETURN NEW; END $$; CREATE TRIGGER t BEFORE UPDATE ON {schema}.jobs FOR EACH ROW "
            "EXECUTE FUNCTION {schema}.t()",
            queue.schema,
        )
    )
    with pytest.raises(psycopg.errors.RaiseException):
        queue.complete(conn, first + second)
    assert queue.status_counts(conn)[1] == ("running", 4)  # nothing applied, not even claim 1's
