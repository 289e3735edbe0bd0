"""A worker: N threads, each with its own connection, running handlers by job type.

Each thread loops: claim a batch (one statement, ``FOR UPDATE SKIP LOCKED``), run the handler of
each job, mark the successes completed in one statement and each failure failed. When nothing
is due it sleeps until a NOTIFY arrives, the next scheduled job is due, or ``poll_interval``
passes (the polling fallback, so a lost notification never strands a job).

A housekeeping thread keeps the claims alive: it extends the lease of every job the worker
holds (heartbeat), fails a job whose handler overran its timeout, and rescues jobs whose lease
expired because *another* worker crashed, hung or lost its connection. A lost connection is
reopened after a short pause, so a database restart only pauses the worker.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from . import db, validate
from .errors import DatabaseUnavailableError, InvalidInputError, PermanentJobError
from .queue import Connection, Job, Queue

Handler = Callable[[Job], Any]

_log = logging.getLogger(__name__)
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailableError)


@dataclass
class WorkerStats:
    """What a worker did, per thread: jobs completed, and failed attempts (a job retried three
    times and then completed counts three failures and one completion); recovery events."""

    completed: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    timed_out: int = 0
    rescued: int = 0
    reconnects: int = 0

    @property
    def total_completed(self) -> int:
        return sum(self.completed.values())

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())


@dataclass
class _Held:
    """The jobs one worker thread holds: claimed, not yet finished."""

    ids: set[int] = field(default_factory=set)
    current: int | None = None
    timeout: float | None = None
    deadline: float | None = None
    abandoned: set[int] = field(default_factory=set)


class Worker:
    """Run jobs from a :class:`~pgqueue_lab.queue.Queue` in ``threads`` threads.

    :param queue: the queue to serve.
    :param handlers: job type -> function taking a :class:`Job`. A handler that raises fails the
        job (the exception text is recorded; it is retried while it has attempts left, unless the
        exception is a :class:`~pgqueue_lab.errors.PermanentJobError`); a job whose type has no
        handler fails too.
    :param dsn: where to connect (default :func:`pgqueue_lab.db.get_dsn`).
    :param threads: worker threads, each with its own connection.
    :param batch_size: jobs claimed per statement.
    :param poll_interval: seconds an idle thread waits for a NOTIFY before claiming anyway.
    :param queues: serve only these named queues (default: all).
    :param name: prefix of thread names and ``worker_id`` values (``name-1``, ``name-2``...).
    :param lease: seconds a claim stays valid without a heartbeat. The worker renews it every
        ``lease / 3`` seconds; if the worker dies, other workers rescue its jobs after this long.
    :param job_timeout: seconds a handler may run before its job is failed (and retried if it
        has attempts left); ``timeouts`` sets it per job type. Python cannot stop a thread, so
        an overrunning handler keeps its thread busy; its late result is ignored.
    :param retry_delay: base of the exponential backoff between attempts, in seconds.
    """

    def __init__(
        self,
        queue: Queue,
        handlers: Mapping[str, Handler],
        *,
        dsn: str | None = None,
        threads: int = 1,
        batch_size: int = 1,
        poll_interval: float = 1.0,
        queues: Sequence[str] | str | None = None,
        name: str | None = None,
        lease: float = 15.0,
        job_timeout: float | None = None,
        timeouts: Mapping[str, float] | None = None,
        retry_delay: float = 1.0,
        max_delay: float = 300.0,
    ) -> None:
        if not isinstance(queue, Queue):
            raise InvalidInputError(f"queue must be a Queue, got {type(queue).__name__}: {queue!r}")
        self.queue = queue
        self.handlers = dict(handlers)
        for key, handler in self.handlers.items():
            validate.job_type(key, what="handler job type")
            if not callable(handler):
                raise InvalidInputError(f"the handler for {key!r} is not callable: {handler!r}")
        self.threads = validate.positive_int(threads, "threads")
        self.batch_size = validate.positive_int(batch_size, "batch_size")
        self.poll_interval = validate.seconds(poll_interval, "poll_interval")
        self.queues = validate.queue_names(queues)
        self.name = validate.job_type(name or f"worker-{os.getpid()}", what="worker name")
        self.lease = validate.seconds(lease, "lease")
        if self.lease < 0.3:
            raise InvalidInputError(f"lease must be at least 0.3 seconds, got {lease}")
        self.job_timeout = None if job_timeout is None else validate.seconds(job_timeout, "job_timeout")
        self.timeouts = {
            validate.job_type(k): validate.seconds(v, f"timeout of {k!r}")
            for k, v in (timeouts or {}).items()
        }
        self.retry_delay = validate.seconds(retry_delay, "retry_delay")
        self.max_delay = validate.seconds(max_delay, "max_delay")
        self.dsn = dsn or db.get_dsn()
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._workers_done = threading.Event()
        self._wake = threading.Condition()
        self._generation = 0
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}
        self._workers: list[threading.Thread] = []
        self._helpers: list[threading.Thread] = []

    # -- public ----------------------------------------------------------------------------

    def run(self, *, until_empty: bool = True) -> WorkerStats:
        """Start the threads and wait for them.

        With ``until_empty`` the worker stops once no job of its queues is pending or running
        (a job scheduled for later is waited for); otherwise it runs until :meth:`stop`.
        """
        self.start(until_empty=until_empty)
        self.join()
        return self.stats

    def start(self, *, until_empty: bool = False) -> None:
        """Start the worker threads, the housekeeper and (unless ``until_empty``) a LISTEN
        thread, and return at once."""
        self._stop.clear()
        self._workers_done.clear()
        self._held = {f"{self.name}-{i}": _Held() for i in range(1, self.threads + 1)}
        self._workers = [
            threading.Thread(target=self._loop, args=(worker_id, until_empty), name=worker_id)
            for worker_id in self._held
        ]
        self._helpers = [
            threading.Thread(target=self._housekeeper, name=f"{self.name}-housekeeper", daemon=True)
        ]
        if not until_empty:
            self._helpers.append(
                threading.Thread(target=self._listener, name=f"{self.name}-listener", daemon=True)
            )
        for thread in self._workers + self._helpers:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask every thread to stop after its current job and wait up to ``timeout`` seconds.

        Jobs claimed in the current batch but not yet started go back to ``pending``.
        """
        self._stop.set()
        self._notify_all()
        if threading.current_thread() not in self._workers:
            self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the worker threads, then the helpers, to finish."""
        for thread in self._workers:
            thread.join(timeout)
        if any(t.is_alive() for t in self._workers):
            return
        self._workers_done.set()
        self._stop.set()
        for thread in self._helpers:
            thread.join(timeout)

    # -- the worker threads ----------------------------------------------------------------

    def _notify_all(self) -> None:
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    def _idle(self, conn: Connection, seen_generation: int) -> None:
        """Sleep until a NOTIFY, the next due job, or the poll interval, whichever comes first."""
        due = self.queue.next_due(conn, self.queues)
        timeout = self.poll_interval if due is None else min(self.poll_interval, due + 0.01)
        with self._wake:
            if self._generation == seen_generation and not self._stop.is_set():
                self._wake.wait(timeout)

    def _loop(self, worker_id: str, until_empty: bool) -> None:
        conn: Connection | None = None
        pause = 0.1
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = db.connect(self.dsn)
                    pause = 0.1
                generation = self._generation
                jobs = self.queue.claim(
                    conn, worker_id, limit=self.batch_size, queues=self.queues, lease=self.lease
                )
                if jobs:
                    self._run_batch(conn, worker_id, jobs)
                    if until_empty:
                        self._notify_all()  # a drain-mode thread may be waiting for this batch
                elif until_empty and not self.queue.has_work(conn, self.queues):
                    break
                else:
                    self._idle(conn, generation)
            except _CONNECTION_ERRORS as exc:
                _log.warning("%s lost its connection (%s); reconnecting in %.1fs", worker_id, exc, pause)
                with self._lock:
                    self._held[worker_id] = _Held()  # stop heartbeating: the leases will expire
                    self.stats.reconnects += 1
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)
        if conn is not None:
            conn.close()

    def _timeout_for(self, job: Job) -> float | None:
        return self.timeouts.get(job.type, self.job_timeout)

    def _run_batch(self, conn: Connection, worker_id: str, jobs: list[Job]) -> None:
        held = self._held[worker_id]
        with self._lock:
            held.ids = {job.id for job in jobs}
        done: list[int] = []
        failed = 0
        for index, job in enumerate(jobs):
            with self._lock:
                if self._stop.is_set() or job.id in held.abandoned:
                    rest = [j.id for j in jobs[index:] if j.id not in held.abandoned]
                    break
                timeout = self._timeout_for(job)
                held.current, held.timeout = job.id, timeout
                held.deadline = None if timeout is None else time.monotonic() + timeout
            error, retry = self._call(job)
            with self._lock:
                held.current = held.deadline = None
                late = job.id in held.abandoned
            if late:
                continue  # timed out: the housekeeper already failed it
            if error is None:
                done.append(job.id)
            else:
                self.queue.fail(
                    conn,
                    job.id,
                    error,
                    retry_delay=self.retry_delay,
                    max_delay=self.max_delay,
                    worker_id=worker_id,
                    retry=retry,
                )
                failed += 1
        else:
            rest = []
        self.queue.release(conn, rest)
        completed = self.queue.complete(conn, done, worker_id=worker_id)
        with self._lock:
            held.ids, held.abandoned = set(), set()
            self.stats.completed[worker_id] += completed
            self.stats.failed[worker_id] += failed

    def _call(self, job: Job) -> tuple[str | None, bool]:
        """Run the job's handler; return (error text or ``None`` on success, whether to retry)."""
        handler = self.handlers.get(job.type)
        if handler is None:
            return f"LookupError: no handler for job type {job.type!r}", True
        try:
            handler(job)
        except PermanentJobError as exc:
            return f"{type(exc).__name__}: {exc}", False
        except Exception as exc:  # noqa: BLE001 - any handler error fails the job
            return f"{type(exc).__name__}: {exc}", True
        return None, True

    # -- helper threads --------------------------------------------------------------------

    def _housekeeper(self) -> None:
        """Heartbeat held jobs, fail overrunning ones, rescue other workers' abandoned jobs."""
        beat = max(0.1, min(self.lease / 3, 1.0))
        conn: Connection | None = None
        while not self._workers_done.is_set() and any(t.is_alive() for t in self._workers):
            try:
                if conn is None or conn.closed:
                    conn = db.connect(self.dsn)
                self._beat(conn)
                rescued = self.queue.rescue(conn)
                if rescued:
                    with self._lock:
                        self.stats.rescued += len(rescued)
                    self._notify_all()
            except _CONNECTION_ERRORS as exc:
                _log.warning("housekeeper lost its connection (%s)", exc)
                if conn is not None:
                    conn.close()
                conn = None
            self._workers_done.wait(beat)
        if conn is not None:
            conn.close()

    def _beat(self, conn: Connection) -> None:
        now = time.monotonic()
        with self._lock:
            snapshot = {
                w: (set(h.ids), h.current, h.timeout, h.deadline) for w, h in self._held.items() if h.ids
            }
        for worker_id, (ids, current, limit, deadline) in snapshot.items():
            if current is not None and limit is not None and deadline is not None and now > deadline:
                status = self.queue.fail(
                    conn,
                    current,
                    f"TimeoutError: handler ran longer than {limit:g} s",
                    retry_delay=self.retry_delay,
                    max_delay=self.max_delay,
                    worker_id=worker_id,
                )
                rest = ids - {current}
                self.queue.release(conn, rest)
                with self._lock:
                    held = self._held[worker_id]
                    held.abandoned |= ids
                    held.ids -= ids
                    if status is not None:
                        self.stats.timed_out += 1
                        self.stats.failed[worker_id] += 1
                continue
            self.queue.heartbeat(conn, worker_id, ids, self.lease)

    def _listener(self) -> None:
        """Wake idle threads when a NOTIFY arrives; reconnect quietly if the connection drops."""
        while not self._stop.is_set():
            try:
                with db.connect(self.dsn) as conn:
                    self.queue.listen(conn)
                    while not self._stop.is_set():
                        payloads = self.queue.wait(conn, timeout=0.5)
                        if payloads and (self.queues is None or set(payloads) & set(self.queues)):
                            self._notify_all()
            except (psycopg.Error, DatabaseUnavailableError) as exc:
                _log.warning("listener lost its connection (%s); polling continues", exc)
                self._stop.wait(1.0)
