"""The worker under every failure: nothing that ran runs again, nothing claimed is stranded.

Each test keeps a ledger of executions (a list, or a table when processes are involved) and
compares it with what must happen: every job exactly once, except the one run a fault
interrupted. Each reproduces one way a queue goes wrong: a timeout mid-batch, a connection
dropped after the handlers ran, a paused worker resumed after its jobs were rescued, Ctrl-C,
two workers with one name, handlers that raise what they should not, a connection that is not
in autocommit mode, backoff arithmetic, missed wake-ups, busy polling, stats that lie.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest
from faults import StallingProxy, wait_for
from psycopg.conninfo import make_conninfo

from pgqueue_lab import InvalidInputError, Job, Queue, Worker, WorkerError, db, sql

HERE = Path(__file__).parent


def _run_in_thread(worker: Worker, timeout: float) -> Any:
    """``worker.run()`` with a deadline: a hung worker fails the test instead of hanging it."""
    result: dict[str, Any] = {}

    def target() -> None:
        try:
            result["stats"] = worker.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        worker.stop(timeout=5)
        raise AssertionError(f"run() had not returned after {timeout} s")
    if "error" in result:
        raise result["error"]
    return result["stats"]


def _statuses(conn: psycopg.Connection[Any], queue: Queue) -> dict[int, tuple[str, int]]:
    return {j["id"]: (j["status"], j["attempts"]) for j in queue.jobs(conn)}


# -- 1. a timeout mid-batch ---------------------------------------------------------------


def test_a_timeout_mid_batch_reruns_nothing_that_finished(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    ids = queue.enqueue_many(conn, [{"type": "t", "payload": {"n": n}, "max_attempts": 3} for n in range(5)])
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            runs[job.payload["n"]] += 1
        if job.payload["n"] == 2:
            time.sleep(1.2)  # overruns its 0.4 s timeout, every attempt

    worker = Worker(
        queue, {"t": handler}, dsn=dsn, batch_size=5, job_timeout=0.4, lease=3.0, retry_delay=0.05
    )
    stats = _run_in_thread(worker, 60)
    assert dict(runs) == {0: 1, 1: 1, 2: 3, 3: 1, 4: 1}, f"executions per job: {dict(sorted(runs.items()))}"
    assert _statuses(conn, queue) == {
        ids[0]: ("completed", 1),
        ids[1]: ("completed", 1),
        ids[2]: ("failed", 3),
        ids[3]: ("completed", 1),
        ids[4]: ("completed", 1),
    }
    assert (stats.timed_out, stats.total_completed, stats.total_failed, stats.lost) == (3, 4, 3, 0)


# -- 2. the connection drops after the handlers ran ---------------------------------------


def test_a_connection_dropped_after_the_handlers_ran_reruns_nothing(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    app = f"{queue.schema}-drop"
    worker_dsn = make_conninfo(dsn, application_name=app)
    ids = queue.enqueue_many(conn, [("t", {"n": n}) for n in range(3)])
    runs: list[tuple[int, int]] = []

    def handler(job: Job) -> None:
        runs.append((job.id, job.attempts))
        if job.id == ids[-1] and job.attempts == 1:
            # Every session of the worker dies now, after the handlers ran, before the batch's
            # completion is sent: the worker thread's next statement finds its connection gone.
            with db.connect(dsn) as killer:
                killer.execute(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE application_name = %s",
                    [app],
                )

    worker = Worker(queue, {"t": handler}, dsn=worker_dsn, batch_size=3, lease=5.0)
    stats = _run_in_thread(worker, 60)
    assert runs == [(i, 1) for i in ids], f"runs (job, attempt): {runs}"
    assert _statuses(conn, queue) == {i: ("completed", 1) for i in ids}
    assert stats.reconnects >= 1 and stats.total_completed == 3


# -- 3. a paused worker resumes after its jobs were rescued -------------------------------


def _start_ledger_worker(schema: str, name: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "crash_worker.py"), schema, name, *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_a_paused_worker_resumed_after_rescue_cannot_touch_the_jobs(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    conn.execute(
        sql.compose("CREATE TABLE {schema}.ledger (job_id bigint, worker text, attempt int)", queue.schema)
    )
    ledger = sql.compose("SELECT job_id, worker FROM {schema}.ledger ORDER BY job_id, worker", queue.schema)
    ids = queue.enqueue_many(conn, [("work", {})] * 3)
    # A: one thread, the whole batch, a 1 s lease, a 1.5 s timeout; each first run sleeps 3 s.
    paused = _start_ledger_worker(
        queue.schema, "A", "--threads", "1", "--batch", "3", "--lease", "1", "--job-timeout", "1.5",
        "--first-run-sleeps", "3",
    )  # fmt: skip
    try:
        wait_for(lambda: len(conn.execute(ledger).fetchall()) == 1, 30, "A to start its first job")
        paused.send_signal(signal.SIGSTOP)  # A holds 3 jobs and is frozen inside the first
        # B rescues the three after A's lease lapses and runs them, 0.5 s each (attempt 2).
        record = sql.compose("INSERT INTO {schema}.ledger VALUES (%s, 'B', %s)", queue.schema)

        def run_b(job: Job) -> None:
            with db.connect(dsn) as own:
                own.execute(record, [job.id, job.attempts])
            runs_b.append(job.id)
            time.sleep(0.5)

        rescuer = Worker(
            queue,
            {"work": run_b},
            dsn=dsn,
            batch_size=3,
            lease=2.0,
            poll_interval=0.2,
            name="B",
        )
        runs_b: list[int] = []
        done = threading.Event()
        threading.Thread(target=lambda: (rescuer.run(), done.set()), daemon=True).start()
        wait_for(lambda: len(runs_b) >= 1, 30, "B to rescue and start the jobs")
        paused.send_signal(signal.SIGCONT)  # A wakes while B runs the jobs A had claimed
        assert done.wait(60), "B did not finish"
        out, _ = paused.communicate(timeout=60)
    finally:
        paused.send_signal(signal.SIGCONT)
        paused.kill()
        paused.wait()
    runs = conn.execute(ledger).fetchall()
    assert runs == [(ids[0], "A"), (ids[0], "B"), (ids[1], "B"), (ids[2], "B")], f"ledger: {runs}"
    assert _statuses(conn, queue) == {i: ("completed", 2) for i in ids}
    rows = queue.jobs(conn)
    assert {r["worker_id"] for r in rows} == {"B-1"}
    assert json.loads(out.strip().splitlines()[-1]) == {"completed": 0, "failed": 0, "lost": 3}


# -- 4. Ctrl-C during run() -----------------------------------------------------------------

_INTERRUPTED = textwrap.dedent(
    """
    import json, sys, threading, time
    from pgqueue_lab import Queue, Worker

    started = []
    def slow(job):
        started.append(job.id)
        print("started", job.id, flush=True)
        time.sleep(1.0)

    worker = Worker(Queue(sys.argv[1]), {"t": slow}, batch_size=4, poll_interval=0.2, name="ctrl-c")
    try:
        worker.run(until_empty=False)
    except KeyboardInterrupt:
        alive = sorted(t.name for t in threading.enumerate() if t is not threading.main_thread())
        print(json.dumps({"interrupted": True, "alive": alive, "started": started}), flush=True)
    sys.stdin.readline()  # the test enqueues a job now and checks that nobody runs it
    print(json.dumps({"started": started}), flush=True)
    """
)


def test_ctrl_c_stops_run_gracefully(dsn: str, conn: psycopg.Connection[Any], queue: Queue) -> None:
    ids = queue.enqueue_many(conn, [("t", {})] * 4)
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTED, queue.schema],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().split() == ["started", str(ids[0])]
        proc.send_signal(signal.SIGINT)
        report = json.loads(proc.stdout.readline())
        assert report == {"interrupted": True, "alive": [], "started": [ids[0]]}
        late = queue.enqueue(conn, "t")
        time.sleep(1.0)  # a worker still claiming would take the late job now
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert json.loads(proc.stdout.readline()) == {"started": [ids[0]]}
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
    rows = {j["id"]: (j["status"], j["attempts"], j["worker_id"]) for j in queue.jobs(conn)}
    assert rows == {
        ids[0]: ("completed", 1, "ctrl-c-1"),  # the job in hand was finished
        ids[1]: ("pending", 0, None),  # the rest of the batch released, attempt refunded
        ids[2]: ("pending", 0, None),
        ids[3]: ("pending", 0, None),
        late: ("pending", 0, None),  # nothing claims after the interrupt
    }


# -- 5. two workers, one identity -----------------------------------------------------------


def test_unnamed_workers_get_distinct_names(dsn: str, conn: psycopg.Connection[Any], queue: Queue) -> None:
    first, second = (Worker(queue, {"t": lambda job: None}, dsn=dsn) for _ in range(2))
    assert first.name != second.name
    assert first.name.startswith(f"worker-{os.getpid()}-") and second.name.startswith(
        f"worker-{os.getpid()}-"
    )
    queue.enqueue_many(conn, [("t", {})] * 2)
    (a,) = queue.claim(conn, first.name)
    (b,) = queue.claim(conn, second.name)
    assert a.token != b.token  # fencing is by claim token: even one name could not confuse them


# -- 6. handlers that raise what they should not; a thread that dies ----------------------


def test_sys_exit_and_unstorable_error_text_fail_only_their_job(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    import asyncio

    def exits(job: Job) -> None:
        sys.exit(3)

    def cancelled(job: Job) -> None:
        raise asyncio.CancelledError()

    def nul(job: Job) -> None:
        raise ValueError("bad\x00byte \udc80 here")

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("cannot render me")

    def unprintable(job: Job) -> None:
        raise Unprintable()

    kinds = {"exits": exits, "cancelled": cancelled, "nul": nul, "unprintable": unprintable}
    handlers = {**kinds, "ok": lambda job: None}
    ids = queue.enqueue_many(conn, [{"type": t, "max_attempts": 1} for t in handlers])
    stats = _run_in_thread(Worker(queue, handlers, dsn=dsn, threads=2), 30)
    rows = {j["id"]: (j["status"], j["last_error"]) for j in queue.jobs(conn)}
    assert rows == {
        ids[0]: ("failed", "SystemExit: 3"),
        ids[1]: ("failed", "CancelledError: "),
        ids[2]: ("failed", "ValueError: bad\\x00byte \\udc80 here"),
        ids[3]: ("failed", "Unprintable: <str() of the exception raised RuntimeError>"),
        ids[4]: ("completed", None),
    }
    assert (stats.total_completed, stats.total_failed, stats.errors) == (1, 4, [])


class _DyingWorker(Worker):
    """A worker whose first thread to record a batch stops there on an unexpected error (as a
    bug in the worker would), holding finished and unstarted jobs."""

    died = False

    def _record_batch(self, conn: Any, batch: Any, worker_id: str, release_waiting: bool) -> None:
        if not self.died and not worker_id.endswith("housekeeper"):
            self.died = True
            raise RuntimeError("injected bug")
        super()._record_batch(conn, batch, worker_id, release_waiting)


def test_a_thread_that_dies_hands_its_jobs_over_and_run_says_so(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    ids = queue.enqueue_many(conn, [("t", {"fail": n == 0}) for n in range(10)])
    runs: list[int] = []

    def handler(job: Job) -> None:
        runs.append(job.id)
        if job.payload["fail"] and job.attempts == 1:
            raise ValueError("first attempt fails")

    worker = _DyingWorker(queue, {"t": handler}, dsn=dsn, threads=2, batch_size=5, retry_delay=0.01)
    with pytest.raises(WorkerError, match=r"-\d stopped: RuntimeError: injected bug"):
        _run_in_thread(worker, 30)
    # The dead thread held a failure; the housekeeper recorded it (and its batch-mates'
    # outcomes, or released them): every job ran once, the failed one once more.
    assert Counter(runs) == {i: 2 if i == ids[0] else 1 for i in ids}, f"runs: {sorted(runs)}"
    assert _statuses(conn, queue) == {i: ("completed", 2 if i == ids[0] else 1) for i in ids}


def test_a_write_the_database_refuses_blocks_nothing_else(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    # A trigger refuses to let one job be completed (an error that is not a lost connection).
    ids = queue.enqueue_many(conn, [("t", {"n": n}) for n in range(6)] + [("long", {})])
    poison = ids[2]
    trigger = """
        CREATE FUNCTION {schema}.refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.status = 'completed' AND NEW.id = POISON THEN
                RAISE EXCEPTION 'refused by a trigger';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse BEFORE UPDATE ON {schema}.jobs
            FOR EACH ROW EXECUTE FUNCTION {schema}.refuse();
        """
    conn.execute(sql.compose(trigger.replace("POISON", str(poison)), queue.schema))
    runs: Counter[int] = Counter()

    def handler(job: Job) -> None:
        runs[job.id] += 1

    def long_job(job: Job) -> None:
        runs[job.id] += 1
        time.sleep(2.0)  # needs the heartbeat: four times the lease

    handlers = {"t": handler, "long": long_job}
    worker = Worker(queue, handlers, dsn=dsn, threads=2, batch_size=6, lease=0.5, name="w")
    worker.start()
    try:
        wait_for(lambda: _statuses(conn, queue)[ids[-1]][0] == "completed", 20, "the long job")
    finally:
        worker.stop(timeout=10)
    statuses = _statuses(conn, queue)
    others = [i for i in ids if i != poison]
    assert {i: statuses[i] for i in others} == {i: ("completed", 1) for i in others}
    assert all(runs[i] == 1 for i in others), f"runs: {dict(runs)}"
    assert any(f"refused to record job {poison}" in e for e in worker.stats.errors), worker.stats.errors


def test_start_refuses_while_the_previous_run_is_still_stopping(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    entered, release = threading.Event(), threading.Event()

    def handler(job: Job) -> None:
        entered.set()
        release.wait(10)

    queue.enqueue(conn, "t")
    worker = Worker(queue, {"t": handler}, dsn=dsn)
    worker.start()
    try:
        # the handler itself, not the claim's 'running': a job claimed but not yet started goes
        # back to pending at stop(), and its thread ends at once (seen under load)
        assert entered.wait(10), "the job never started"
        worker.stop(timeout=0.1)  # returns at once; the thread is still in its handler
        with pytest.raises(WorkerError, match="still running or stopping: call join"):
            worker.start()
    finally:
        release.set()
        worker.join(10)
    worker.start()  # once stopped, it may start again
    worker.stop(timeout=10)
    assert queue.status_counts(conn)[2] == ("completed", 1)


def test_lease_too_long_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="lease must be at most"):
        Worker(Queue("x"), {}, dsn="postgresql://nowhere", lease=1e300)


# -- 7. a connection that is not in autocommit mode -----------------------------------------


def test_non_autocommit_connections_never_leave_a_transaction_open(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    with psycopg.connect(dsn) as plain:  # psycopg's default: autocommit off
        queue.enqueue(plain, "t")
        queue.status_counts(plain)
        queue.enqueue(plain, "t")
        queue.jobs(plain)
        queue.next_due(plain)
        queue.enqueue_many(plain, [("t", {})])
        assert plain.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert queue.status_counts(conn)[0] == ("pending", 3)

    with psycopg.connect(dsn) as plain:  # the caller's own open transaction: the caller decides
        plain.execute("SELECT 1")
        queue.enqueue(plain, "t")
        plain.rollback()
        with pytest.raises(InvalidInputError, match="listen\\(\\) needs an autocommit connection"):
            queue.listen(plain)
    assert queue.status_counts(conn)[0] == ("pending", 3)


# -- 8. backoff arithmetic --------------------------------------------------------------------


def _delays(conn: psycopg.Connection[Any], queue: Queue, jobs: list[Job], **kwargs: Any) -> list[float]:
    """Fail ``jobs`` in one transaction and return each retry's delay, exactly (now() is fixed
    within a transaction)."""
    with conn.transaction():
        for job in jobs:
            assert queue.fail(conn, job, "boom", **kwargs) == "pending"
        rows = conn.execute(
            sql.compose(
                "SELECT extract(epoch FROM run_at - now())::float8 FROM {schema}.jobs"
                " WHERE id = ANY(%s) ORDER BY id",
                queue.schema,
            ),
            [[job.id for job in jobs]],
        ).fetchall()
    return [row[0] for row in rows]


def test_backoff_cannot_overflow_at_attempt_1025(conn: psycopg.Connection[Any], queue: Queue) -> None:
    queue.enqueue(conn, "t", max_attempts=5000)
    conn.execute(sql.compose("UPDATE {schema}.jobs SET attempts = 1024", queue.schema))
    (job,) = queue.claim(conn, "w")
    assert job.attempts == 1025
    (delay,) = _delays(conn, queue, [job], retry_delay=1.0, max_delay=300.0)
    assert 270 <= delay <= 300


def test_jittered_delays_never_exceed_max_delay_and_do_vary(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    queue.enqueue_many(conn, [{"type": "t", "max_attempts": 20} for _ in range(200)])
    conn.execute(sql.compose("UPDATE {schema}.jobs SET attempts = 8", queue.schema))  # base 2^8 s > cap
    capped = _delays(conn, queue, queue.claim(conn, "w", limit=200), retry_delay=1.0, max_delay=10.0)
    assert max(capped) <= 10.0, f"{sum(d > 10 for d in capped)} of 200 delays exceed max_delay"
    assert min(capped) >= 9.0 and max(capped) - min(capped) > 0.5, "no jitter at the cap"

    conn.execute(sql.compose("UPDATE {schema}.jobs SET run_at = now(), attempts = 0", queue.schema))
    first = _delays(conn, queue, queue.claim(conn, "w", limit=200), retry_delay=10.0, max_delay=100.0)
    assert all(9.0 <= d <= 11.0 for d in first)
    assert max(first) - min(first) > 1.0 and len({round(d, 6) for d in first}) > 150, "no jitter"


# -- 9. retries and releases wake idle workers ------------------------------------------------


def test_a_retry_after_a_timeout_starts_before_the_poll_interval(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    starts: list[tuple[int, float]] = []

    def handler(job: Job) -> None:
        starts.append((job.attempts, time.monotonic()))
        if job.attempts == 1:
            time.sleep(4.0)  # overruns its 0.3 s timeout; this thread is busy until then

    queue.enqueue(conn, "t")
    worker = Worker(
        queue,
        {"t": handler},
        dsn=dsn,
        threads=2,
        poll_interval=10,
        lease=1.5,
        job_timeout=0.3,
        retry_delay=0.2,
    )
    worker.start()
    try:
        wait_for(lambda: len(starts) >= 2, 15, "the retry to start")
    finally:
        worker.stop(timeout=10)
    (a1, t1), (a2, t2) = starts
    assert (a1, a2) == (1, 2) and t2 - t1 < 2.0, f"retry started {t2 - t1:.1f} s after the first run"


def test_jobs_released_by_a_stopping_worker_wake_another(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    started = threading.Event()
    taken: list[float] = []

    def slow(job: Job) -> None:
        started.set()
        time.sleep(1.0)

    queue.enqueue_many(conn, [("t", {})] * 5)
    stopping = Worker(queue, {"t": slow}, dsn=dsn, batch_size=5, name="stopping")
    stopping.start()
    assert started.wait(10)  # "stopping" holds all five jobs
    other = Worker(queue, {"t": lambda job: taken.append(time.monotonic())}, dsn=dsn, poll_interval=10)
    other.start()  # finds nothing: idle, LISTENing, polling only every 10 s
    try:
        time.sleep(0.5)
        stopped_at = time.monotonic()
        stopping.stop(timeout=10)  # finishes the job in hand, releases the other four
        wait_for(lambda: queue.status_counts(conn)[2] == ("completed", 5), 15, "every job to run")
    finally:
        other.stop(timeout=10)
    assert (stopping.stats.total_completed, len(taken)) == (1, 4)
    waited = max(taken) - stopped_at
    assert waited < 3.0, f"released jobs started {waited:.1f} s after the stop"


# -- 10. an idle worker does not spin on a locked due job -----------------------------------


class _CountingQueue(Queue):
    def __init__(self, schema: str) -> None:
        super().__init__(schema)
        self.claims = 0

    def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        self.claims += 1
        return super().claim(*args, **kwargs)


def test_idle_sleep_ignores_a_locked_due_job(dsn: str, conn: psycopg.Connection[Any], queue: Queue) -> None:
    job_id = queue.enqueue(conn, "t")
    counting = _CountingQueue(queue.schema)
    worker = Worker(counting, {"t": lambda job: None}, dsn=dsn, poll_interval=5)
    with db.connect(dsn) as holder, holder.transaction():
        holder.execute(
            sql.compose("SELECT id FROM {schema}.jobs WHERE id = %s FOR UPDATE", queue.schema), [job_id]
        )
        worker.start()
        time.sleep(2.0)
        claims = counting.claims
        worker.stop(timeout=10)
    assert claims <= 3, f"{claims} claims in 2 s with poll_interval=5"


# -- 11. stats count what the database recorded ----------------------------------------------


def test_stats_count_what_the_database_recorded(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    def handler(job: Job) -> None:
        if job.attempts == 1:
            # The lease lapses and another party rescues the job while this run is on it.
            with db.connect(dsn) as other:
                other.execute(
                    sql.compose(
                        "UPDATE {schema}.jobs SET locked_until = now() - interval '1 s'", queue.schema
                    )
                )
                queue.rescue(other)
            raise ValueError("too late to report")

    queue.enqueue(conn, "t")
    stats = _run_in_thread(Worker(queue, {"t": handler}, dsn=dsn, lease=5.0), 30)
    (job,) = queue.jobs(conn)
    assert (job["status"], job["attempts"]) == ("completed", 2)
    assert job["last_error"].startswith("lease expired")  # the late failure was refused
    assert (stats.total_completed, stats.total_failed, stats.lost) == (1, 0, 1)


# -- the heartbeat, and the check before starting a job ------------------------------------


def test_the_heartbeat_keeps_a_job_longer_than_its_lease(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    runs: Counter[int] = Counter()
    ids = queue.enqueue_many(conn, [("t", {})] * 3)

    def long_job(job: Job) -> None:
        runs[job.id] += 1
        time.sleep(3.0)  # three times the lease: only the heartbeat keeps it

    stats = _run_in_thread(Worker(queue, {"t": long_job}, dsn=dsn, threads=3, lease=1.0), 30)
    assert dict(runs) == {i: 1 for i in ids} and stats.rescued == 0
    assert _statuses(conn, queue) == {i: ("completed", 1) for i in ids}


class _NoHeartbeatWorker(Worker):
    """A worker whose housekeeper never renews a lease, as if it were paused or cut off."""

    def _beat(self, conn: psycopg.Connection[Any]) -> None:
        return None


def test_a_thread_unsure_of_its_lease_asks_before_starting_a_job(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    first, second = queue.enqueue_many(conn, [("t", {})] * 2)
    runs: list[tuple[str, int]] = []

    def handler(job: Job) -> None:
        runs.append(("W", job.id))
        if job.id == first:  # meanwhile the lease lapses and B takes over both jobs
            time.sleep(0.5)
            with db.connect(dsn) as other:
                # (W's own housekeeper may be the one that rescues them)
                wait_for(
                    lambda: queue.rescue(other) is None or queue.status_counts(other)[0] == ("pending", 2),
                    10,
                    "the rescue",
                )
                for taken in queue.claim(other, "B", limit=2):
                    runs.append(("B", taken.id))

    worker = _NoHeartbeatWorker(queue, {"t": handler}, dsn=dsn, batch_size=2, lease=0.3, name="W")
    worker.start()
    try:
        wait_for(lambda: len(runs) >= 3, 10, "B to take the jobs")
        time.sleep(0.5)  # W's thread decides about the second job now
    finally:
        worker.stop(timeout=10)
    assert runs == [("W", first), ("B", first), ("B", second)], f"runs: {runs}"
    assert worker.stats.lost == 2  # its completion of the first, and the second it never started


# -- a connection that stalls in the middle of a write ---------------------------------------


def _ledger_handler(conn_dsn: str, schema: str, who: str, fail_first: set[int]) -> Any:
    record = sql.compose("INSERT INTO {schema}.ledger VALUES (%s, %s, %s)", schema)

    def handler(job: Job) -> None:
        with db.connect(conn_dsn) as own:
            own.execute(record, [job.id, who, job.attempts])
        if job.id in fail_first and job.attempts == 1:
            raise ValueError("first attempt fails")

    return handler


@pytest.mark.parametrize(
    ("stalled", "pattern", "seconds"),
    [("completion", b"SET status = 'completed'", 4.0), ("failure", b"'attempt', attempts", None)],
    ids=["completion", "failure"],
)
def test_a_write_stalled_on_its_connection_loses_and_repeats_nothing(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, stalled: str, pattern: bytes, seconds: float | None
) -> None:
    """A's thread hangs in a write (4 s, or for good); A's housekeeper keeps the leases alive,
    then takes the batch over on its own connection. B stands by to run anything released or
    rescued: nothing that ran may run again, nothing may stay running."""
    conn.execute(
        sql.compose("CREATE TABLE {schema}.ledger (job_id bigint, worker text, attempt int)", queue.schema)
    )
    ids = queue.enqueue_many(conn, [("t", {})] * 4)
    fail_first = {ids[0]} if stalled == "failure" else set()
    proxy = StallingProxy(dsn, pattern, seconds)
    a = Worker(queue, {"t": _ledger_handler(dsn, queue.schema, "A", fail_first)}, dsn=proxy.dsn,
               batch_size=4, lease=1.0, retry_delay=0.05, poll_interval=0.2, name="A")  # fmt: skip
    b = Worker(queue, {"t": _ledger_handler(dsn, queue.schema, "B", fail_first)}, dsn=dsn,
               lease=1.0, poll_interval=0.2, name="B")  # fmt: skip
    a.start()
    try:
        assert proxy.stalled.wait(10), "the write never happened"
        b.start()
        wait_for(lambda: queue.status_counts(conn)[2] == ("completed", 4), 30, "every job completed")
        time.sleep(1.5)  # a rerun, if any, would start now
    finally:
        b.stop(timeout=10)
        a.stop(timeout=1)
        proxy.close()
        a.join(10)
    runs = Counter(
        job_id for (job_id,) in conn.execute(sql.compose("SELECT job_id FROM {schema}.ledger", queue.schema))
    )
    expected = {i: 2 if i in fail_first else 1 for i in ids}
    assert dict(runs) == expected, f"runs per job: {dict(runs)}"
    assert queue.status_counts(conn) == [
        ("pending", 0),
        ("running", 0),
        ("completed", 4),
        ("failed", 0),
        ("cancelled", 0),
    ]


# -- a database that refuses or drags: triggers, timeouts, slow writes ---------------------


def _trigger(conn: psycopg.Connection[Any], queue: Queue, body: str, *, per: str = "ROW") -> None:
    """Install a BEFORE UPDATE trigger on the queue's jobs table running ``body`` (PL/pgSQL)."""
    conn.execute(
        sql.compose(
            "CREATE FUNCTION {schema}.t() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            + body
            + " RETURN NEW; END $$; CREATE TRIGGER t BEFORE UPDATE ON {schema}.jobs FOR EACH "
            + per
            + " EXECUTE FUNCTION {schema}.t()",
            queue.schema,
        )
    )


def test_a_slow_write_does_not_starve_the_heartbeat(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    # Completing takes 2.5 s (longer than the 1 s lease): the thread's write is taken over, and
    # the housekeeper's copy of it is just as slow. The other thread's long job lives on its
    # heartbeat alone, which must not wait for either.
    conn.execute(
        sql.compose(
            """
            CREATE TABLE {schema}.slowed (x int);
            CREATE FUNCTION {schema}.slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN
                IF EXISTS (SELECT 1 FROM {schema}.jobs WHERE status = 'completed')
                   AND NOT EXISTS (SELECT 1 FROM {schema}.slowed) THEN
                    INSERT INTO {schema}.slowed VALUES (1);
                    PERFORM pg_sleep(2.5);  -- the first completion statement only
                END IF;
                RETURN NULL;
            END $$;
            CREATE TRIGGER slow AFTER UPDATE ON {schema}.jobs
                FOR EACH STATEMENT EXECUTE FUNCTION {schema}.slow();
            """,
            queue.schema,
        )
    )
    runs: Counter[int] = Counter()
    quick, slow = queue.enqueue_many(conn, [("quick", {}), ("slow", {})])

    def work(job: Job) -> None:
        runs[job.id] += 1
        if job.type == "slow":
            time.sleep(4.0)

    worker = Worker(queue, {"quick": work, "slow": work}, dsn=dsn, threads=2, lease=1.0, poll_interval=0.2)
    stats = _run_in_thread(worker, 60)
    assert dict(runs) == {quick: 1, slow: 1}, f"runs: {dict(runs)}"
    assert _statuses(conn, queue) == {quick: ("completed", 1), slow: ("completed", 1)}
    assert stats.rescued == 0


def test_a_refused_heartbeat_blocks_no_other_job(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    # The database refuses to renew the lease of job `hb` (a trigger). It shares a batch with
    # `long`, which outlives the lease and lives on its heartbeat: that must go on.
    hb, long = queue.enqueue_many(conn, [("quick", {}), ("long", {})])
    _trigger(
        conn,
        queue,
        f"IF OLD.id = {hb} AND OLD.status = 'running' AND NEW.status = 'running' "
        "THEN RAISE EXCEPTION 'no heartbeat for you'; END IF;",
    )
    runs: Counter[int] = Counter()
    lease_valid: list[bool] = []
    check = sql.compose(
        "SELECT status = 'running' AND locked_until > now() FROM {schema}.jobs WHERE id = %s", queue.schema
    )

    def work(job: Job) -> None:
        runs[job.id] += 1
        if job.type == "quick":
            time.sleep(0.5)  # running through two heartbeats (every 0.2 s): each is refused
        if job.type == "long":
            time.sleep(1.5)  # more than two leases: only its heartbeat keeps it
            with db.connect(dsn) as other:
                lease_valid.append(other.execute(check, [job.id]).fetchone() == (True,))
            time.sleep(1.5)

    worker = Worker(queue, {"quick": work, "long": work}, dsn=dsn, batch_size=2, lease=0.6, poll_interval=0.2)
    worker.start()
    try:
        wait_for(lambda: _statuses(conn, queue)[long][0] == "completed", 30, "the long job")
    finally:
        worker.stop(timeout=10)
    assert lease_valid[:1] == [True], "the long job's lease was not renewed"
    assert runs[long] == 1, f"runs: {dict(runs)}"


def test_a_refused_rescue_blocks_no_other_rescue(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    # A crashed worker left two jobs with expired leases; a trigger will not let `stuck` leave
    # `running`. The rescue of everything at once fails: `lost` must come back all the same.
    stuck, lost = queue.enqueue_many(conn, [("t", {})] * 2)
    queue.claim(conn, "crashed", limit=2, lease=0.0)
    _trigger(
        conn, queue, f"IF OLD.id = {stuck} AND NEW.status <> 'running' THEN RAISE EXCEPTION 'stuck'; END IF;"
    )
    runs: Counter[int] = Counter()
    worker = Worker(queue, {"t": lambda job: runs.update([job.id])}, dsn=dsn, lease=1.0, poll_interval=0.2)
    worker.start()
    try:
        wait_for(lambda: _statuses(conn, queue)[lost][0] == "completed", 20, "the lost job to be rescued")
    finally:
        worker.stop(timeout=10)
    assert dict(runs) == {lost: 1}
    assert _statuses(conn, queue)[stuck][0] == "running"


def test_a_batch_write_longer_than_statement_timeout_is_written_job_by_job(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    # Each completed row costs 20 ms in a trigger, the worker's sessions allow 200 ms per
    # statement: the batch of 30 times out every time; one job at a time fits.
    _trigger(conn, queue, "IF NEW.status = 'completed' THEN PERFORM pg_sleep(0.02); END IF;")
    ids = queue.enqueue_many(conn, [("t", {})] * 30)
    runs: Counter[int] = Counter()
    worker_dsn = make_conninfo(dsn, options="-c statement_timeout=200")
    worker = Worker(queue, {"t": lambda job: runs.update([job.id])}, dsn=worker_dsn, batch_size=30, lease=5.0)
    _run_in_thread(worker, 60)
    assert dict(runs) == {i: 1 for i in ids}
    assert _statuses(conn, queue) == {i: ("completed", 1) for i in ids}


def test_a_row_lock_held_by_another_transaction_loses_no_job(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Another transaction locks a finished job's row (an admin's ``SELECT ... FOR UPDATE``, a
    cancel that is then rolled back) for longer than a heartbeat period. The heartbeat skips the
    locked row (``SKIP LOCKED``); that must not read as "rescued from us": the job's completion
    waits in the batch, and forgetting it would let its lease lapse and the job run again."""
    ids = queue.enqueue_many(conn, [{"type": "t", "payload": {"n": n}} for n in range(2)])
    runs: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(job: Job) -> None:
        with lock:
            runs[job.payload["n"]] += 1
        if job.payload["n"] == 1:
            time.sleep(3.5)  # keeps the batch open: job 0's completion waits for the batch's end

    # Heartbeats every second (lease / 3); the lock below outlasts one, not the lease.
    worker = Worker(queue, {"t": handler}, dsn=dsn, threads=1, batch_size=2, lease=3.0, poll_interval=0.1)
    worker.start()
    try:
        wait_for(lambda: runs[0] == 1 and runs[1] == 1, 10, "both handlers started")
        with db.connect(dsn) as other:
            other.execute("BEGIN")
            row = sql.compose("SELECT status FROM {schema}.jobs WHERE id = %(id)s FOR UPDATE", queue.schema)
            assert other.execute(row, {"id": ids[0]}).fetchone() == ("running",)
            time.sleep(1.5)  # at least one heartbeat finds the row locked
            other.execute("ROLLBACK")
        done = {ids[0]: ("completed", 1), ids[1]: ("completed", 1)}
        wait_for(lambda: _statuses(conn, queue) == done, 10, "both jobs completed")
        time.sleep(3.5)  # past a lease: a forgotten job would be rescued and run again by now
    finally:
        worker.stop(timeout=10)
    assert dict(runs) == {0: 1, 1: 1}, f"executions per job: {dict(sorted(runs.items()))}"
    assert _statuses(conn, queue) == {ids[0]: ("completed", 1), ids[1]: ("completed", 1)}
    assert worker.stats.lost == 0


def test_ctrl_c_while_the_threads_start_stops_those_started(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C can land inside ``start()``, after the worker threads started and before the
    housekeeper did (a loaded machine makes the window wide). ``run()`` must still stop what
    started, and leave no job running."""
    ids = queue.enqueue_many(conn, [("t", {})] * 6)
    runs: Counter[int] = Counter()
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        if thread.name.endswith("-housekeeper"):
            time.sleep(0.3)  # the worker threads claim and run meanwhile
            raise KeyboardInterrupt
        real_start(thread)

    def handler(job: Job) -> None:
        runs[job.id] += 1
        time.sleep(0.2)

    worker = Worker(queue, {"t": handler}, dsn=dsn, threads=2, batch_size=2, lease=5.0, name="ctrl-c-start")
    monkeypatch.setattr(threading.Thread, "start", start)
    with pytest.raises(KeyboardInterrupt):
        worker.run(until_empty=False)
    monkeypatch.undo()
    alive = [t.name for t in threading.enumerate() if t.name.startswith("ctrl-c-start") and t.is_alive()]
    assert alive == [], f"threads still running after the interrupt: {alive}"
    statuses = _statuses(conn, queue)
    assert set(statuses) == set(ids), statuses
    assert {s for s, _ in statuses.values()} <= {"completed", "pending"}, statuses
    assert all(statuses[i] == ("completed", 1) for i in runs), statuses  # what ran, ran once
    assert all(n == 1 for n in runs.values()) and runs, dict(runs)
