"""Polling-only mode, enqueue without NOTIFY, and the start-up self-check of wake-ups."""

from __future__ import annotations

import logging
import struct
import threading
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from pgqueue_lab import Queue, Worker, db, wakeups
from tests.faults import Proxy, wait_for


class NotifyDroppingProxy(Proxy):
    """Relays every protocol message except the server's notifications (``A`` messages): what a
    client behind a pooler in transaction mode sees (its LISTEN succeeds, nothing ever arrives).
    """

    def __init__(self, dsn: str) -> None:
        super().__init__(dsn)
        self.dropped = 0
        # No SSL or GSS negotiation: the server's stream is then typed messages from the start.
        self.dsn = make_conninfo(self.dsn, sslmode="disable", gssencmode="disable")

    def server_sends(self, state: dict[str, Any], data: bytes) -> bytes:
        pending = state.get("pending", b"") + data
        out = b""
        while len(pending) >= 5:  # whole messages: a type byte, then a 4-byte length
            length = struct.unpack("!I", pending[1:5])[0]
            if len(pending) < 1 + length:
                break
            message, pending = pending[: 1 + length], pending[1 + length :]
            if message[:1] == b"A":
                self.dropped += 1
            else:
                out += message
        state["pending"] = pending
        return out


def _listener(dsn: str, queue: Queue) -> psycopg.Connection[Any]:
    conn = db.connect(dsn)
    queue.listen(conn)
    return conn


def test_enqueue_without_notify_sends_nothing(conn: psycopg.Connection[Any], queue: Queue, dsn: str) -> None:
    with _listener(dsn, queue) as listener:
        quiet = queue.enqueue(conn, "email", {"n": 1}, notify=False)
        many = queue.enqueue_many(conn, [("email", {"n": n}) for n in range(3)], notify=False)
        assert queue.wait(listener, timeout=0.5) == []
        loud = queue.enqueue(conn, "email", {"n": 2})
        assert queue.wait(listener, timeout=5) == ["default"]
    jobs = {j["id"]: j["status"] for j in queue.jobs(conn)}
    assert jobs == dict.fromkeys([quiet, *many, loud], "pending")
    assert many == sorted(many) and len(many) == 3


def test_the_self_check_passes_on_a_direct_connection(queue: Queue, dsn: str) -> None:
    with _listener(dsn, queue) as listener:
        assert wakeups.self_check(listener, queue, timeout=5)


def test_the_self_check_warns_when_notifications_never_arrive(
    queue: Queue, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = NotifyDroppingProxy(dsn)
    try:
        with (
            _listener(proxy.dsn, queue) as listener,
            caplog.at_level(logging.WARNING, "pgqueue_lab.features.wakeups"),
        ):
            assert not wakeups.self_check(listener, queue, timeout=0.5, poll_interval=1)
            assert proxy.dropped == 1
        [record] = caplog.records
        assert "did not receive its own NOTIFY" in record.getMessage()
        assert "fall back to polling every 1 s" in record.getMessage()
    finally:
        proxy.close()


def test_a_worker_behind_the_proxy_warns_and_still_runs_every_job_by_polling(
    conn: psycopg.Connection[Any], queue: Queue, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = NotifyDroppingProxy(dsn)
    ran: list[int] = []
    worker = Worker(
        queue, {"email": lambda job: ran.append(job.id)}, dsn=proxy.dsn, poll_interval=0.2, lease=5
    )
    try:
        with caplog.at_level(logging.WARNING, "pgqueue_lab.features.wakeups"):
            worker.start()
            wait_for(lambda: worker.wakeups_ok is not None, 10, "the self-check")
            assert worker.wakeups_ok is False
            assert any("fall back to polling every 0.2 s" in r.getMessage() for r in caplog.records)
            ids = [queue.enqueue(conn, "email", {"n": n}) for n in range(5)]
            wait_for(lambda: sorted(ran) == ids, 20, "every job run by polling")
    finally:
        worker.stop(timeout=20)
        proxy.close()
    assert proxy.dropped >= 5  # the announcements were sent, and never arrived


def test_a_direct_worker_passes_the_self_check(conn: psycopg.Connection[Any], queue: Queue, dsn: str) -> None:
    worker = Worker(queue, {"email": lambda job: None}, dsn=dsn, lease=5)
    worker.start()
    try:
        wait_for(lambda: worker.wakeups_ok is not None, 10, "the self-check")
        assert worker.wakeups_ok is True
    finally:
        worker.stop(timeout=20)


def test_listen_false_polls_only(conn: psycopg.Connection[Any], queue: Queue, dsn: str) -> None:
    """No listener thread at all; jobs enqueued without NOTIFY still run, within a poll interval."""
    ran: list[int] = []
    worker = Worker(
        queue, {"email": lambda job: ran.append(job.id)}, dsn=dsn, listen=False, poll_interval=0.1
    )
    worker.start()
    try:
        assert not [t for t in threading.enumerate() if t.name == f"{worker.name}-listener"]
        ids = [queue.enqueue(conn, "email", {"n": n}, notify=False) for n in range(5)]
        wait_for(lambda: sorted(ran) == ids, 20, "every job run by polling")
    finally:
        worker.stop(timeout=20)
    assert worker.wakeups_ok is None
