"""Bad input: a clear exception naming the problem, before anything reaches the database.

Each call is made with a *closed* connection as well: if anything were sent to the database
first, psycopg would raise OperationalError instead of our InvalidInputError.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from pgqueue_lab import InvalidInputError, Job, NewJob, Queue, QueueNotFoundError, Worker, db, schedule

BAD_CALLS: dict[str, tuple[Callable[[Queue, Any], Any], str]] = {
    "payload with a set": (lambda q, c: q.enqueue(c, "email", {"to": {"a", "b"}}), "not JSON-serialisable"),
    "payload with a datetime": (
        lambda q, c: q.enqueue(c, "email", {"at": datetime.datetime(2026, 1, 1)}),
        "not JSON-serialisable",
    ),
    "payload with NaN": (lambda q, c: q.enqueue(c, "t", {"x": float("nan")}), "not JSON-serialisable"),
    "empty job type": (lambda q, c: q.enqueue(c, "", {}), "job type must not be empty"),
    "blank job type": (lambda q, c: q.enqueue(c, "   ", {}), "job type must not be empty"),
    "job type not a string": (lambda q, c: q.enqueue(c, 42, {}), "job type must be a string"),
    "job type None": (lambda q, c: q.enqueue(c, None, {}), "job type must be a string"),
    "negative delay": (lambda q, c: q.enqueue(c, "t", delay=-1), "delay must be a finite number"),
    "zero max_attempts": (lambda q, c: q.enqueue(c, "t", max_attempts=0), "max_attempts must be at least 1"),
    "huge priority": (lambda q, c: q.enqueue(c, "t", priority=2**40), "does not fit"),
    "bad job in a batch": (
        lambda q, c: q.enqueue_many(c, [("t", {}), ("t", {}), ("", {})]),
        "job type must not be empty (job #2 of the batch)",
    ),
    "unserialisable payload in a batch": (
        lambda q, c: q.enqueue_many(c, [("t", {}), ("t", {"x": object()})]),
        "not JSON-serialisable",
    ),
    "malformed batch item": (lambda q, c: q.enqueue_many(c, ["email"]), "job #0 of the batch must be"),
    "negative batch size": (lambda q, c: q.claim(c, "w", limit=-5), "limit must be at least 1, got -5"),
    "zero batch size": (lambda q, c: q.claim(c, "w", limit=0), "limit must be at least 1"),
    "batch size not an int": (lambda q, c: q.claim(c, "w", limit=2.5), "limit must be an integer"),
    "empty worker id": (lambda q, c: q.claim(c, ""), "worker_id must not be empty"),
    "empty queue list": (lambda q, c: q.claim(c, "w", queues=[]), "queues must name at least one queue"),
    "NUL in a job type": (
        lambda q, c: q.enqueue(c, "e\x00mail", {}),
        "job type 'e\\x00mail' contains the NUL",
    ),
    "NUL in a queue name": (lambda q, c: q.enqueue(c, "t", queue="a\x00b"), "queue name 'a\\x00b' contains"),
    "NUL in a worker id": (lambda q, c: q.claim(c, "w\x00"), "worker_id 'w\\x00' contains the NUL"),
    "lone surrogate in a payload": (
        lambda q, c: q.enqueue(c, "t", {"file": "caf\udce9.txt"}),
        "payload contains '\\udce9' at position",
    ),
    "lone surrogate in a batch": (
        lambda q, c: q.enqueue_many(c, [("t", {}), ("t", {"file": "\udce9"})]),
        "lone surrogate that UTF-8 cannot encode (job #1 of the batch)",
    ),
    "lone surrogate in a job type": (lambda q, c: q.enqueue(c, "t\udce9", {}), "job type contains"),
    "delay past ten years": (lambda q, c: q.enqueue(c, "t", delay=1e12), "delay must be at most"),
    "complete with a bare id": (lambda q, c: q.complete(c, 1), "complete() takes the Job objects"),
    "fail with a bare id": (lambda q, c: q.fail(c, 1, "boom"), "fail() takes the Job objects"),
    "release with bare ids": (lambda q, c: q.release(c, [1, 2]), "release() takes the Job objects"),
    "heartbeat with bare ids": (lambda q, c: q.heartbeat(c, [1], 10), "heartbeat() takes the Job"),
    "unclaimed job": (
        lambda q, c: q.complete(c, [Job(1, "default", "t", {}, 0, 5)]),
        "takes the Job objects",
    ),
    "requeue a huge id": (lambda q, c: q.requeue(c, 2**70), "does not fit a 64-bit integer"),
    "per_key past 32 bits": (lambda q, c: q.claim(c, "w", per_key=2**31), "per_key 2147483648 does not fit"),
    "unique_key too long": (lambda q, c: q.enqueue(c, "t", unique_key="k" * 501), "the limit is 500"),
    "concurrency_key too long in a batch": (
        lambda q, c: q.enqueue_many(c, [NewJob("t"), NewJob("t", concurrency_key="é" * 501)]),
        "concurrency_key is 501 characters long; the limit is 500",
    ),
    "schedule name too long": (
        lambda q, c: schedule.add(q, c, "s" * 501, "t", every=5),
        "schedule name is 501 characters long; the limit is 500",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_is_refused_before_the_database(
    case: str, dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    call, message = BAD_CALLS[case]
    queue.enqueue(conn, "existing", {"keep": True})
    before = queue.jobs(conn)

    with pytest.raises(InvalidInputError, match=re.escape(message)):
        call(queue, conn)
    assert queue.jobs(conn) == before, "the queue changed"

    closed = db.connect(dsn)
    closed.close()
    with pytest.raises(InvalidInputError):  # not OperationalError: nothing was sent
        call(queue, closed)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Robert'); DROP TABLE jobs;--", "invalid schema name"),
        ("MixedCase", "invalid schema name"),
        ("9lives", "invalid schema name"),
        ("", "invalid schema name"),
        ("x" * 51, "at most 50 characters"),
        ("public", "system schema"),
        ("pg_catalog", "system schema"),
        (None, "schema name must be a string"),
    ],
)
def test_invalid_schema_names(name: Any, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Queue(name)


def test_invalid_input_is_also_a_value_error() -> None:
    with pytest.raises(ValueError):
        Queue("no spaces allowed")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threads": 0}, "threads must be at least 1"),
        ({"batch_size": -1}, "batch_size must be at least 1"),
        ({"poll_interval": -0.5}, "poll_interval must be a finite number"),
        ({"per_key": 2**31}, "per_key 2147483648 does not fit a 32-bit integer"),
    ],
)
def test_bad_worker_settings(dsn: str, queue: Queue, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        Worker(queue, {"t": print}, dsn=dsn, **kwargs)


def test_handler_error_fails_the_job_and_unknown_types_too(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    def broken(job: Any) -> None:
        raise KeyError("missing 'to'")

    queue.enqueue_many(conn, [NewJob(t, max_attempts=1) for t in ("broken", "unknown", "ok")])
    stats = Worker(queue, {"broken": broken, "ok": lambda job: None}, dsn=dsn).run()
    rows = [(j["type"], j["status"], j["last_error"]) for j in queue.jobs(conn)]
    assert rows == [
        ("broken", "failed", "KeyError: \"missing 'to'\""),
        ("unknown", "failed", "LookupError: no handler for job type 'unknown'"),
        ("ok", "completed", None),
    ]
    assert (stats.total_completed, stats.total_failed) == (1, 2)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"to": "bob@example.com"}', "str holding JSON text"),
        ("  [1, 2]", "str holding JSON text"),
        ({"note": "nul \x00 inside"}, "NUL character"),
    ],
)
def test_payload_traps_are_refused(
    conn: psycopg.Connection[Any], queue: Queue, payload: Any, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        queue.enqueue(conn, "email", payload)
    with pytest.raises(InvalidInputError, match=rf"{message}.*\(job #1 of the batch\)"):
        queue.enqueue_many(conn, [("email", {}), ("email", payload)])
    assert queue.jobs(conn) == []


def test_plain_strings_and_escaped_backslashes_are_fine(conn: psycopg.Connection[Any], queue: Queue) -> None:
    queue.enqueue(conn, "t", "just a string")
    queue.enqueue_many(conn, [("t", {"path": "C:\\u0000dir"}), ("t", ["list"])])
    assert [j["payload"] for j in queue.jobs(conn)] == ["just a string", {"path": "C:\\u0000dir"}, ["list"]]


def test_worker_refuses_a_non_queue_and_uncallable_handlers(dsn: str, queue: Queue) -> None:
    with pytest.raises(InvalidInputError, match="queue must be a Queue, got str"):
        Worker("shop", {"t": print}, dsn=dsn)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="the handler for 'email' is not callable"):
        Worker(queue, {"email": "send_email"}, dsn=dsn)  # type: ignore[dict-item]


def test_a_queue_never_created_gives_one_clear_error(dsn: str, conn: psycopg.Connection[Any]) -> None:
    missing = Queue("never_created_here")
    message = r"the queue 'never_created_here' does not exist in this database: create it first"
    for call in (
        lambda: missing.enqueue(conn, "t"),
        lambda: missing.enqueue_many(conn, [("t", {})]),
        lambda: missing.claim(conn, "w"),
        lambda: missing.status_counts(conn),
        lambda: missing.jobs(conn),
        lambda: Worker(missing, {"t": print}, dsn=dsn).run(),
    ):
        with pytest.raises(QueueNotFoundError, match=message):
            call()
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
