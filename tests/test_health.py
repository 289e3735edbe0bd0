"""The health check: the oldest open snapshot, dead rows, the backlog, and warnings past thresholds."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psycopg
import pytest

from pgqueue_lab import InvalidInputError, Queue, QueueNotFoundError, db, health, sql, watch
from tests.faults import wait_for

QUIET = health.Thresholds(snapshot_seconds=3600, snapshot_xids=10**9, dead_rows=10**9, pending=10**9)


def _dead_rows(conn: psycopg.Connection[Any], queue: Queue, n: int) -> None:
    """Make ``n`` dead rows in the jobs table (n updates), counted by the statistics at once."""
    ids = queue.enqueue_many(conn, [("email", {"n": i}) for i in range(n)])
    conn.execute(sql.compose("UPDATE {schema}.jobs SET priority = 1 WHERE id = ANY(%s)", queue.schema), [ids])
    conn.execute("SELECT pg_stat_force_next_flush()")


def test_a_held_snapshot_is_found_and_warned_about(
    conn: psycopg.Connection[Any], queue: Queue, dsn: str
) -> None:
    with db.connect(dsn, application_name="report-holding-a-snapshot") as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute(sql.compose("SELECT count(*) FROM {schema}.jobs", queue.schema))
        for _ in range(3):  # three transactions commit after the snapshot was taken
            queue.enqueue(conn, "email", {})
        time.sleep(0.2)
        report = health.check(conn, queue, health.Thresholds(snapshot_seconds=0.1))
        s = report.oldest_snapshot
        assert s is not None and s.pid == holder.info.backend_pid
        assert (s.application_name, s.state) == ("report-holding-a-snapshot", "idle in transaction")
        assert s.xids >= 3 and s.seconds is not None and s.seconds >= 0.2
        assert not report.ok
        [warning] = report.warnings
        assert "holds back vacuum" in warning and f"pid {s.pid}" in warning
        # Not past the thresholds: healthy.
        assert health.check(conn, queue, QUIET).ok
        holder.execute("ROLLBACK")
    after = health.check(conn, queue, QUIET).oldest_snapshot
    assert after is None or after.pid != holder.info.backend_pid


def test_a_transaction_id_held_counts_too(conn: psycopg.Connection[Any], queue: Queue, dsn: str) -> None:
    """A READ COMMITTED transaction that wrote a row and sits idle holds no snapshot between its
    statements, but its transaction id (backend_xid) holds back vacuum all the same."""
    with db.connect(dsn) as writer:
        writer.execute("BEGIN")
        queue.enqueue(writer, "email", {})
        queue.enqueue(conn, "email", {})
        wait_for(
            lambda: (
                (s := health.check(conn, queue, QUIET).oldest_snapshot) is not None
                and s.pid == writer.info.backend_pid
                and s.xids >= 1
            ),
            10,
            "the writer's transaction id in the report",
        )
        writer.execute("ROLLBACK")


def test_dead_rows_and_the_backlog_are_counted_and_warned_about(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    _dead_rows(conn, queue, 20)
    queue.enqueue(conn, "later", {}, delay=3600)
    wait_for(lambda: (health.check(conn, queue).dead_rows or 0) >= 20, 10, "20 dead rows in the statistics")
    time.sleep(0.05)
    report = health.check(conn, queue, health.Thresholds(dead_rows=10, pending=20, due_seconds=0.01))
    assert report.pending == 21
    assert report.oldest_due is not None and report.oldest_due >= 0.05
    warnings = report.warnings
    assert len(warnings) == 3, warnings
    assert any("dead rows in the jobs table" in w for w in warnings)
    assert any("21 jobs pending" in w for w in warnings)
    assert any("a due job has waited" in w for w in warnings)
    # At the thresholds, not past them: no backlog warning.
    calm = health.check(conn, queue, health.Thresholds(dead_rows=10**6, pending=21, due_seconds=3600))
    assert calm.warnings == [] or all("holds back vacuum" in w for w in calm.warnings)


def test_a_job_scheduled_for_later_is_not_late(conn: psycopg.Connection[Any], queue: Queue) -> None:
    queue.enqueue(conn, "later", {}, delay=3600)
    report = health.check(conn, queue, health.Thresholds(due_seconds=0))
    assert (report.pending, report.oldest_due) == (1, None)
    assert not any("a due job" in w for w in report.warnings)


def test_the_live_view_shows_the_health_report(conn: psycopg.Connection[Any], queue: Queue, dsn: str) -> None:
    queue.enqueue(conn, "email", {})
    with db.connect(dsn) as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1")
        snap = watch.take(conn, queue)
        assert snap.health is not None and snap.health.pending == 1
        text = watch.frame_text(snap)
        assert "oldest open snapshot:" in text and "pending: 1" in text
        holder.execute("ROLLBACK")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"snapshot_seconds": -1}, "snapshot_seconds must be a finite number of seconds"),
        ({"dead_rows": 0}, "dead_rows must be at least 1"),
        ({"pending": "many"}, "pending must be an integer"),
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        health.Thresholds(**kwargs)


def test_bad_arguments_are_refused(conn: psycopg.Connection[Any], queue: Queue) -> None:
    with pytest.raises(InvalidInputError, match="thresholds must be a Thresholds"):
        health.check(conn, queue, {"dead_rows": 1})  # type: ignore[arg-type]
    with pytest.raises(QueueNotFoundError, match="no_such_queue"):
        health.check(conn, "no_such_queue")


def test_the_warning_names_the_timeout_that_ends_what_holds_vacuum_back(
    conn: psycopg.Connection[Any], queue: Queue, dsn: str
) -> None:
    """A session idle in its transaction is ended by idle_in_transaction_session_timeout; a
    running statement never is, so its warning names statement_timeout instead."""
    warn = health.Thresholds(snapshot_seconds=0.1, snapshot_xids=10**9, dead_rows=10**9, pending=10**9)
    with db.connect(dsn, application_name="idle-report") as idle:
        idle.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        idle.execute("SELECT 1")
        time.sleep(0.2)
        [warning] = health.check(conn, queue, warn).warnings
        assert "idle-report, idle in transaction" in warning and warning.endswith(health.IDLE_CURE)
    with db.connect(dsn, application_name="long-statement") as busy:
        pid = busy.info.backend_pid

        def sleep() -> None:
            with contextlib.suppress(psycopg.errors.QueryCanceled):  # ended by the finally below
                busy.execute("SELECT pg_sleep(10)")

        running = threading.Thread(target=sleep)
        running.start()
        try:
            wait_for(
                lambda: (s := health.check(conn, queue, QUIET).oldest_snapshot) is not None and s.pid == pid,
                5,
                "the running statement's snapshot",
            )
            time.sleep(0.2)
            [warning] = health.check(conn, queue, warn).warnings
            assert "long-statement, active" in warning and warning.endswith(health.ACTIVE_CURE)
        finally:
            conn.execute("SELECT pg_cancel_backend(%s)", (pid,))
            running.join()
