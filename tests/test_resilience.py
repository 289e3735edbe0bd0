"""Production behaviour under faults: retries, dead letters, timeouts, crashes, restarts, lost LISTEN.

Crash tests use real worker *processes* killed with SIGKILL, and an execution ledger table
that records every run, so duplicate executions are counted, not guessed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from faults import SilentDropProxy, wait_for

from pgqueue_lab import Job, PermanentJobError, Queue, Worker, db, embedded, sql

HERE = Path(__file__).parent


def test_backoff_grows_exponentially_within_jitter_bounds(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    queue.enqueue(conn, "flaky", max_attempts=7)
    delays = []
    for _ in range(6):
        (job,) = queue.claim(conn, "w")
        assert queue.fail(conn, job, "boom", retry_delay=10, max_delay=100) == "pending"
        row = conn.execute(
            sql.compose("SELECT extract(epoch FROM run_at - now())::float8 FROM {schema}.jobs", queue.schema)
        ).fetchone()
        assert row is not None
        delays.append(row[0])
        conn.execute(sql.compose("UPDATE {schema}.jobs SET run_at = now()", queue.schema))  # skip the wait
    for delay, base in zip(delays, [10, 20, 40, 80, 100, 100], strict=True):
        assert base * 0.9 - 0.5 <= delay <= base * 1.1, (delays, base)
    assert len({round(d, 3) for d in delays}) == len(delays)  # jittered, not identical


def test_dead_letter_after_max_attempts_then_requeue(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    fixed = threading.Event()

    def send(job: Job) -> None:
        if not fixed.is_set():
            raise ConnectionError("smtp server down")

    job_id = queue.enqueue(conn, "email", {"to": "a@example.com"}, max_attempts=3)
    Worker(queue, {"email": send}, dsn=dsn, retry_delay=0.01, poll_interval=0.05).run()
    (dead,) = queue.dead_letters(conn)
    assert (dead["id"], dead["attempts"], dead["last_error"]) == (
        job_id,
        3,
        "ConnectionError: smtp server down",
    )
    assert [e["attempt"] for e in dead["errors"]] == [1, 2, 3]

    assert queue.requeue(conn, [job_id, 999_999]) == [job_id]  # unknown ids are skipped
    assert queue.dead_letters(conn) == []
    fixed.set()
    Worker(queue, {"email": send}, dsn=dsn).run()
    (job,) = queue.jobs(conn)
    assert (job["status"], job["attempts"]) == ("completed", 1)


def test_a_handler_exceeding_its_timeout_is_failed_and_retried(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    runs: list[int] = []

    def slow_first_time(job: Job) -> None:
        runs.append(job.attempts)
        if job.attempts == 1:
            time.sleep(2.0)  # overruns the 0.5 s timeout

    job_id = queue.enqueue(conn, "report", max_attempts=2)
    stats = Worker(
        queue,
        {"report": slow_first_time},
        dsn=dsn,
        threads=2,
        timeouts={"report": 0.5},
        lease=3,
        retry_delay=0.01,
    ).run()
    (job,) = queue.dead_letters(conn) or queue.jobs(conn)
    assert (job["id"], job["status"], job["attempts"]) == (job_id, "completed", 2)
    errors = conn.execute(sql.compose("SELECT errors FROM {schema}.jobs", queue.schema)).fetchone()
    assert errors == ([{"attempt": 1, "error": "TimeoutError: handler ran longer than 0.5 s"}],)
    assert sorted(runs) == [1, 2] and stats.timed_out == 1 and stats.total_completed == 1


def test_scheduled_job_runs_when_due_not_before(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    done = threading.Event()
    worker = Worker(queue, {"t": lambda job: done.set()}, dsn=dsn, poll_interval=30)
    worker.start()
    try:
        time.sleep(0.5)  # idle, in a 30 s poll
        queue.enqueue(conn, "t", delay=1.5)
        assert done.wait(15), "the idle worker did not wake when the job fell due"
    finally:
        worker.stop(timeout=10)
    waited = conn.execute(
        sql.compose(
            "SELECT extract(epoch FROM started_at - created_at)::float8 FROM {schema}.jobs", queue.schema
        )
    ).fetchone()
    assert waited is not None and waited[0] >= 1.5


def test_priority_order_through_a_worker(dsn: str, conn: psycopg.Connection[Any], queue: Queue) -> None:
    order: list[str] = []
    queue.enqueue_many(
        conn,
        [
            {"type": "t", "payload": {"n": n}, "priority": p}
            for n, p in [("low1", 0), ("high", 9), ("low2", 0), ("mid", 5)]
        ],
    )
    Worker(queue, {"t": lambda job: order.append(job.payload["n"])}, dsn=dsn).run()
    assert order == ["high", "mid", "low1", "low2"]


# -- crashes ------------------------------------------------------------------------------


def _start_worker(schema: str, name: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PGAPPNAME": f"{schema}-{name}"}  # libpq labels its sessions with this
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_worker.py"), schema, name],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_killed_worker_processes_lose_no_job(conn: psycopg.Connection[Any], queue: Queue) -> None:
    jobs = 600
    ledger = "CREATE TABLE {schema}.ledger (job_id bigint, worker text, attempt int)"
    conn.execute(sql.compose(ledger, queue.schema))
    ids = queue.enqueue_many(conn, [("work", {"n": i}) for i in range(jobs)])
    count = sql.compose("SELECT count(*) FROM {schema}.ledger", queue.schema)
    victims = [_start_worker(queue.schema, f"victim{i}") for i in range(2)]
    try:
        wait_for(lambda: conn.execute(count).fetchone()[0] >= 60, 60, "the victims to get going")  # type: ignore[index]
    finally:
        for proc in victims:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    # A statement the victims had already sent may still commit after the kill: count the jobs
    # in flight only once the server has closed every session of the dead processes.
    sessions = psycopg.sql.SQL("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE {}").format(
        psycopg.sql.Literal(f"{queue.schema}-victim%")
    )
    wait_for(lambda: conn.execute(sessions).fetchone() == (0,), 30, "the victims' sessions to end")
    in_flight = conn.execute(
        sql.compose("SELECT count(*) FROM {schema}.jobs WHERE status = 'running'", queue.schema)
    ).fetchone()[0]  # type: ignore[index]
    assert in_flight > 0, "the kill hit no job in flight: the test proved nothing"

    survivor = _start_worker(queue.schema, "survivor")
    assert survivor.wait(120) == 0

    assert queue.status_counts(conn) == [
        ("pending", 0),
        ("running", 0),
        ("completed", jobs),
        ("failed", 0),
        ("cancelled", 0),
    ]
    executed, distinct = conn.execute(
        sql.compose("SELECT count(*), count(DISTINCT job_id) FROM {schema}.ledger", queue.schema)
    ).fetchone()  # type: ignore[misc]
    assert distinct == jobs, "a job was never executed"
    assert executed - distinct <= in_flight, f"{executed - distinct} duplicates > {in_flight} jobs in flight"
    rescued = conn.execute(
        sql.compose(
            "SELECT count(*) FROM {schema}.jobs WHERE last_error LIKE 'lease expired%%'", queue.schema
        )
    ).fetchone()
    assert rescued == (in_flight,)
    assert (
        sorted(r[0] for r in conn.execute(sql.compose("SELECT id FROM {schema}.jobs", queue.schema))) == ids
    )


# -- the database restarts ----------------------------------------------------------------


@pytest.fixture
def private_server() -> Any:
    """An embedded server of our own (so restarting it disturbs nobody); yields (dsn, restart).

    Its data directory is not under pytest's ``tmp_path``: as root the server runs as its own
    user, and any pytest run on the machine (another suite, a nested one) resets pytest's
    temporary root to mode 0700, which would lock that user out of its own data directory.
    """
    base = Path(tempfile.mkdtemp(prefix="pgqueue-lab-restart-"))
    base.chmod(0o755)
    pgdata = base / "pg"
    env = {k: v for k, v in os.environ.items() if k != db.DSN_ENV}
    env[embedded.PGDATA_ENV] = str(pgdata)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pgqueue_lab import embedded; print(embedded.embedded_uri(), flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert holder.stdout is not None
    dsn = holder.stdout.readline().strip()

    def restart() -> None:
        pgserver = embedded._pgserver()
        pgserver.pgexec.pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "restart", "-m", "fast"),
            bin_path=pgserver.utils.POSTGRES_VERSIONS[embedded._pg_major()],
            user="pgserver" if os.geteuid() == 0 else None,
        )

    yield dsn, restart
    holder.communicate("\n", timeout=60)  # the holder detaches
    # pg_ctl restart gave the server a new PID that the holder does not know: stop it ourselves.
    pgserver = embedded._pgserver()
    if (pgdata / "postmaster.pid").exists():
        pgserver.pgexec.pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "stop", "-m", "fast"),
            bin_path=pgserver.utils.POSTGRES_VERSIONS[embedded._pg_major()],
            user="pgserver" if os.geteuid() == 0 else None,
        )
    shutil.rmtree(base, ignore_errors=True)


def test_workers_reconnect_after_a_database_restart(private_server: Any) -> None:
    dsn, restart = private_server
    queue = Queue("restart_test")
    jobs = 400
    with db.connect(dsn) as conn:
        queue.create(conn)
        queue.enqueue_many(conn, [("work", {})] * jobs)
    executed: list[int] = []

    def work(job: Job) -> None:
        executed.append(job.id)
        time.sleep(0.005)

    worker = Worker(queue, {"work": work}, dsn=dsn, threads=4, batch_size=5, lease=1.0, poll_interval=0.2)
    worker.start()
    try:
        wait_for(lambda: len(executed) >= 50, 60, "the worker to get going")
        restart()
        restarted_at = len(executed)
        with db.connect(dsn) as conn:
            wait_for(lambda: queue.status_counts(conn)[2] == ("completed", jobs), 120, "every job completed")
            counts = queue.status_counts(conn)
    finally:
        worker.stop(timeout=30)
    assert counts == [("pending", 0), ("running", 0), ("completed", jobs), ("failed", 0), ("cancelled", 0)]
    assert restarted_at < jobs, "the restart came after all the work: the test proved nothing"
    assert worker.stats.reconnects >= 1
    assert set(executed) == set(range(1, jobs + 1))


# -- a LISTEN connection that silently stops delivering -----------------------------------


def test_polling_finds_every_job_after_the_listen_connection_silently_dies(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    proxy = SilentDropProxy(dsn)
    done: list[int] = []
    worker = Worker(
        queue, {"t": lambda job: done.append(job.id)}, dsn=proxy.dsn, poll_interval=0.3, threads=2
    )
    worker.start()
    try:
        wait_for(lambda: proxy.listeners_seen >= 1, 10, "the worker to LISTEN")
        proxy.drop()
        ids = [queue.enqueue(conn, "t", {"n": i}) for i in range(20)]
        wait_for(lambda: len(done) >= 20, 30, "polling to find every job")
    finally:
        worker.stop(timeout=10)
        proxy.close()
    assert sorted(done) == ids


def test_graceful_stop_finishes_the_current_job_and_releases_the_rest(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    started = threading.Event()
    finished: list[int] = []

    def slow(job: Job) -> None:
        started.set()
        time.sleep(0.3)
        finished.append(job.id)

    queue.enqueue_many(conn, [("t", {})] * 10)
    worker = Worker(queue, {"t": slow}, dsn=dsn, batch_size=10)
    worker.start()
    assert started.wait(10)
    worker.stop(timeout=10)
    rows = queue.jobs(conn)
    completed = [r["id"] for r in rows if r["status"] == "completed"]
    pending = [r for r in rows if r["status"] == "pending"]
    assert completed == finished and len(completed) >= 1  # the job in hand was finished
    assert len(completed) + len(pending) == 10  # nothing left running
    assert all(r["attempts"] == 0 and r["worker_id"] is None for r in pending)  # released, not counted


def test_a_permanent_error_skips_the_remaining_attempts(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    def parse(job: Job) -> None:
        raise PermanentJobError(f"payload has no 'to': {job.payload}")

    queue.enqueue(conn, "email", {"subject": "hi"}, max_attempts=5)
    stats = Worker(queue, {"email": parse}, dsn=dsn, retry_delay=0.01).run()
    (dead,) = queue.dead_letters(conn)
    assert (dead["attempts"], dead["last_error"]) == (
        1,
        "PermanentJobError: payload has no 'to': {'subject': 'hi'}",
    )
    assert stats.total_failed == 1
