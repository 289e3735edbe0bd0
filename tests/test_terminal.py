"""The terminal commands, as processes on the run's database: ``worker``, ``enqueue``, ``watch``.

Workers are real processes stopped with real signals (Ctrl-C is SIGINT); every wait is bounded.
Notebook 10 runs the classroom script (two workers, a producer, one killed with SIGKILL) itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import make_conninfo

from pgqueue_lab import Queue, db, handlers, watch


def _env(dsn: str) -> dict[str, str]:
    return {**os.environ, db.DSN_ENV: dsn, "PYTHONUNBUFFERED": "1"}


def _cli(
    *args: str, dsn: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue_lab", *args],
        env=_env(dsn),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgqueue-lab: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _wait(condition: Callable[[], Any], timeout: float = 30, what: str = "the condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not come true within {timeout} s")
        time.sleep(0.05)
    return value


class Processes:
    """Worker processes of one test, their output in files; all killed at the end."""

    def __init__(self, dsn: str, folder: Path) -> None:
        self.dsn, self.folder = dsn, folder
        self.procs: list[subprocess.Popen[str]] = []

    def worker(self, *args: str, name: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        out = (self.folder / f"{name}.out").open("w")
        err = (self.folder / f"{name}.err").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "pgqueue_lab", "worker", "--name", name, *args],
            env=_env(self.dsn),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            text=True,
        )
        self.procs.append(proc)
        _wait(lambda: "Ctrl-C stops" in self.out(name) or proc.poll() is not None, what=f"{name} starting")
        assert proc.poll() is None, self.err(name)
        return proc

    def out(self, name: str) -> str:
        return (self.folder / f"{name}.out").read_text()

    def err(self, name: str) -> str:
        return (self.folder / f"{name}.err").read_text()

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()


@pytest.fixture
def processes(dsn: str, tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(dsn, tmp_path)
    try:
        yield procs
    finally:
        procs.kill_all()


def _counts(conn: psycopg.Connection[Any], queue: Queue) -> dict[str, int]:
    return dict(queue.status_counts(conn))


def test_two_workers_share_what_a_producer_enqueues_and_stop_on_ctrl_c(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, processes: Processes
) -> None:
    workers = [processes.worker("--schema", queue.schema, "--threads", "2", name=n) for n in ("tw-a", "tw-b")]
    produced = _cli(
        "enqueue", "--schema", queue.schema, "email", '{"to": "class@example.com", "seconds": 0.05}',
        "--count", "40", "--rate", "200", dsn=dsn,
    )  # fmt: skip
    assert produced.returncode == 0, produced.stderr
    assert produced.stdout.startswith("enqueued 40 email job(s) into ")
    _wait(lambda: _counts(conn, queue)["completed"] == 40, what="40 jobs completed")
    frame = _cli("watch", "--schema", queue.schema, "--once", dsn=dsn)
    assert frame.returncode == 0, frame.stderr
    assert "completed 40" in frame.stdout and "sessions waiting for a lock: none" in frame.stdout
    assert "tw-a " in frame.stdout and "tw-b " in frame.stdout
    for proc in workers:
        proc.send_signal(signal.SIGINT)
    for proc, name in zip(workers, ("tw-a", "tw-b"), strict=True):
        assert proc.wait(timeout=20) == 0
        out = processes.out(name)
        assert f"{name}: stopped; completed " in out
        done = [line for line in out.splitlines() if ": job #" in line]
        assert done, f"{name} did no job: SKIP LOCKED should share them"
        assert all("sent to class@example.com" in line for line in done)
        assert "Traceback" not in processes.err(name)
    rows = conn.execute(
        pgsql.SQL("SELECT attempts, count(*) FROM {}.jobs GROUP BY 1").format(pgsql.Identifier(queue.schema))
    )
    assert rows.fetchall() == [(1, 40)], "a job ran twice"


def test_a_second_ctrl_c_stops_at_once(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, processes: Processes
) -> None:
    [job_id] = queue.enqueue_many(conn, [("report", {"seconds": 60})])
    worker = processes.worker("--schema", queue.schema, "--lease", "1", name="stubborn")
    _wait(lambda: _counts(conn, queue)["running"] == 1, what="the report running")
    worker.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert worker.poll() is None, "the first Ctrl-C should wait for the running job"
    assert "stopping after the running jobs (Ctrl-C again: at once)" in processes.err("stubborn")
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=5) == 130
    assert "stopped at once" in processes.err("stubborn")
    # the lease (1 s) runs out: the job comes back like a crashed worker's
    assert _wait(lambda: queue.rescue(conn), timeout=5, what="the rescue") == [(job_id, "pending")]


def test_a_handler_failure_is_logged_on_one_line(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, processes: Processes
) -> None:
    made = _cli(
        "enqueue",
        "--schema",
        queue.schema,
        "resize",
        '{"width": 0, "seconds": 0}',
        "--max-attempts",
        "1",
        dsn=dsn,
    )
    assert made.returncode == 0, made.stderr
    worker = processes.worker("--schema", queue.schema, name="resizer")
    _wait(lambda: _counts(conn, queue)["failed"] == 1, what="the resize job failed")
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=10) == 0
    err = processes.err("resizer")
    assert "resizer-1: job 1 (resize) failed on attempt 1: ValueError: width must be positive, got 0" in err
    assert "Traceback" not in err


def test_handlers_of_your_own(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue, processes: Processes, tmp_path: Path
) -> None:
    (tmp_path / "class_jobs.py").write_text(
        "def ping(job):\n    print('pong', job.payload['n'], flush=True)\n\nHANDLERS = {'ping': ping}\n"
    )
    queue.enqueue_many(conn, [("ping", {"n": n}) for n in range(3)])
    worker = processes.worker(
        "--schema", queue.schema, "--handlers", "class_jobs:HANDLERS", name="pinger", cwd=tmp_path
    )
    _wait(lambda: _counts(conn, queue)["completed"] == 3, what="three pings")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=10) == 0
    assert sorted(line for line in processes.out("pinger").splitlines() if line.startswith("pong")) == [
        "pong 0",
        "pong 1",
        "pong 2",
    ]


def test_watch_sees_lock_waits_and_the_frame_in_words(
    conn: psycopg.Connection[Any], queue: Queue, dsn: str
) -> None:
    """Plain FOR UPDATE makes a session wait: the view lists it with who blocks it."""
    queue.enqueue(conn, "email", {})
    with db.connect(dsn) as holder, db.connect(dsn, application_name="waiting-one") as waiter:
        lock = pgsql.SQL("SELECT id FROM {}.jobs FOR UPDATE").format(pgsql.Identifier(queue.schema))
        holder.execute("BEGIN")
        holder.execute(lock)
        waiter.execute("SET statement_timeout = '20s'")
        waiter_pid = waiter.info.backend_pid
        thread_error: list[BaseException] = []

        def wait_for_lock() -> None:
            try:
                with waiter.transaction():
                    waiter.execute(lock)
            except BaseException as exc:  # noqa: BLE001 - reported below
                thread_error.append(exc)

        t = threading.Thread(target=wait_for_lock)
        t.start()
        try:
            snap = _wait(
                lambda: (s := watch.take(conn, queue)).lock_waits and s,
                what="the waiting session in pg_locks",
            )
            [wait] = snap.lock_waits
            assert (wait.pid, wait.application_name, wait.blocked_by) == (
                waiter_pid,
                "waiting-one",
                [holder.info.backend_pid],
            )
            text = watch.frame_text(snap)
            assert "sessions waiting for a lock" in text and "waiting-one" in text
            assert "sessions waiting for a lock: 1" in snap.summary()
        finally:
            holder.execute("ROLLBACK")
            t.join(timeout=20)
        assert not thread_error
    snap = watch.take(conn, queue)
    assert snap.summary() == (
        f"queue {queue.schema}\n  jobs: 1 pending, 0 running, 0 completed, 0 failed, 0 cancelled\n"
        "  workers that completed jobs: none\n  running jobs: none\n  sessions waiting for a lock: none"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("worker", "--schema", "no_such_queue"), "the queue 'no_such_queue' does not exist"),
        (("enqueue", "--schema", "no_such_queue", "email"), "--create"),
        (("watch", "--schema", "no_such_queue"), "the queue 'no_such_queue' does not exist"),
        (("enqueue", "--schema", "{q}", "email", "{{'to': 1}}"), "the payload is not valid JSON"),
        (("enqueue", "--schema", "{q}", "email", "--count", "0"), "--count must be at least 1, got 0"),
        (("enqueue", "--schema", "{q}", "email", "--rate", "0"), "--rate must be a positive number"),
        (("enqueue", "--schema", "{q}", "email", "--count", "two"), "invalid int value: 'two'"),
        (("enqueue", "--schema", "Bad Name", "email"), "invalid schema name 'Bad Name'"),
        (("worker", "--schema", "{q}", "--threads", "0"), "threads must be at least 1"),
        (("worker", "--schema", "{q}", "--handlers", "nothing"), "give module:attr"),
        (("worker", "--schema", "{q}", "--handlers", "no_such_module:H"), "cannot import no_such_module"),
        (
            ("worker", "--schema", "{q}", "--handlers", "pgqueue_lab.tools.handlers:DURATIONS"),
            "is not callable: 0.5",
        ),
        (("worker", "--schema", "{q}", "--handlers", "pgqueue_lab.tools.handlers:NOPE"), "has no NOPE"),
        (("watch", "--schema", "{q}", "--interval", "0"), "--interval must be at least 0.1"),
        (("watch",), "the following arguments are required: --schema"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    dsn: str, queue: Queue, args: tuple[str, ...], message: str, tmp_path: Path
) -> None:
    _one_line_error(_cli(*(a.format(q=queue.schema) for a in args), dsn=dsn, cwd=tmp_path), message)


@pytest.fixture
def stranger_dsn(dsn: str) -> Iterator[str]:
    """A role that may log in and nothing else."""
    role = f"pgqlab_test_{uuid.uuid4().hex[:8]}_nobody"
    with db.connect(dsn) as conn:
        row = conn.execute(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
        ).fetchone()
        if not (row and row[0]):
            pytest.skip("the run's role may not create roles")
        password = uuid.uuid4().hex  # servers that check passwords (CI's service container) need one
        conn.execute(
            pgsql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                pgsql.Identifier(role), pgsql.Literal(password)
            )
        )
    try:
        yield make_conninfo(dsn, user=role, password=password)
    finally:
        with db.connect(dsn) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE usename = %s", [role]
            )
            conn.execute(pgsql.SQL("DROP OWNED BY {}").format(pgsql.Identifier(role)))
            conn.execute(pgsql.SQL("DROP ROLE {}").format(pgsql.Identifier(role)))


def test_a_dsn_without_rights_is_one_line(queue: Queue, stranger_dsn: str) -> None:
    for args in (
        ("enqueue", "--schema", queue.schema, "email"),
        ("worker", "--schema", queue.schema),
        ("watch", "--schema", queue.schema, "--once"),
    ):
        _one_line_error(_cli(*args, dsn=stranger_dsn), "the database refused: permission denied for schema")


def test_the_demo_handlers_take_their_time_and_fail_like_the_seed() -> None:
    from pgqueue_lab import Job

    assert handlers.DURATIONS == {"email": 0.5, "report": 2.0, "resize": 1.0}
    started = time.monotonic()
    handlers.send_email(Job(1, "default", "email", {"seconds": 0.05}, 1, 5))
    assert 0.05 <= time.monotonic() - started < 1
    with pytest.raises(ValueError, match="width must be positive"):
        handlers.resize(Job(2, "default", "resize", {"width": 0, "seconds": 0}, 1, 5))
    with pytest.raises(Exception, match="payload 'seconds' must be a number"):
        handlers.make_report(Job(3, "default", "report", {"seconds": "soon"}, 1, 5))


def test_a_command_started_from_a_notebook_ends_with_its_kernel(dsn: str, queue: Queue) -> None:
    """terminal.Command (notebook 10's processes): when the process that started it dies, as a
    kernel killed by a restart or by nbval does, the worker exits instead of serving on."""
    import psutil

    kernel = (
        "import os, sys\n"
        "from pgqueue_lab.tools.terminal import Command\n"
        "worker = Command('worker', '--schema', sys.argv[1], '--name', 'orphan')\n"
        "worker.wait_for('Ctrl-C stops')\n"
        "print(worker.pid, worker.command, flush=True)\n"
        "os._exit(0)\n"
    )
    started = subprocess.run(
        [sys.executable, "-c", kernel, queue.schema],
        env=_env(dsn),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 0, started.stderr
    pid, command = started.stdout.split(" ", 1)
    assert command.strip() == f"pgqueue-lab worker --schema {queue.schema} --name orphan"

    def gone() -> bool:
        try:
            return psutil.Process(int(pid)).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    _wait(gone, timeout=10, what="the orphaned worker exiting")
