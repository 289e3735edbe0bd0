"""A worker: N threads, each with its own connection, running handlers by job type.

Each thread loops: claim a batch (one statement, ``FOR UPDATE SKIP LOCKED``), run the handler of
each job, mark the successes completed in one statement and each failure failed. When nothing
is due it sleeps until a NOTIFY arrives or ``poll_interval`` passes (the polling fallback, so a
lost notification never strands a job). A lost connection is reopened after a short pause.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from . import db, validate
from .errors import DatabaseUnavailableError
from .queue import Connection, Job, Queue

Handler = Callable[[Job], Any]

_log = logging.getLogger(__name__)


@dataclass
class WorkerStats:
    """What a worker did: jobs completed and failed, per thread name."""

    completed: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0

    @property
    def total_completed(self) -> int:
        return sum(self.completed.values())

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())


class Worker:
    """Run jobs from a :class:`~pgqueue_lab.queue.Queue` in ``threads`` threads.

    :param queue: the queue to serve.
    :param handlers: job type -> function taking a :class:`Job`. A handler that raises fails the
        job (the exception text is recorded); a job whose type has no handler fails too.
    :param dsn: where to connect (default :func:`pgqueue_lab.db.get_dsn`).
    :param threads: worker threads, each with its own connection.
    :param batch_size: jobs claimed per statement.
    :param poll_interval: seconds an idle thread waits for a NOTIFY before claiming anyway.
    :param queues: serve only these named queues (default: all).
    :param name: prefix of thread names and ``worker_id`` values (``name-1``, ``name-2``...).
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
        retry_delay: float = 1.0,
    ) -> None:
        self.queue = queue
        self.handlers = dict(handlers)
        for key in self.handlers:
            validate.job_type(key, what="handler job type")
        self.dsn = dsn or db.get_dsn()
        self.threads = validate.positive_int(threads, "threads")
        self.batch_size = validate.positive_int(batch_size, "batch_size")
        self.poll_interval = validate.seconds(poll_interval, "poll_interval")
        self.queues = validate.queue_names(queues)
        self.name = validate.job_type(name or f"worker-{os.getpid()}", what="worker name")
        self.retry_delay = validate.seconds(retry_delay, "retry_delay")
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._wake = threading.Condition()
        self._generation = 0
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- public ----------------------------------------------------------------------------

    def run(self, *, until_empty: bool = True) -> WorkerStats:
        """Start the threads and wait for them.

        With ``until_empty`` each thread stops once a claim finds nothing due; otherwise the
        worker runs until :meth:`stop` is called (from a handler, a signal handler or another thread).
        """
        self.start(until_empty=until_empty)
        self.join()
        return self.stats

    def start(self, *, until_empty: bool = False) -> None:
        """Start the threads (and a LISTEN thread unless ``until_empty``) and return at once."""
        self._stop.clear()
        self._threads = [
            threading.Thread(
                target=self._loop, args=(f"{self.name}-{i}", until_empty), name=f"{self.name}-{i}"
            )
            for i in range(1, self.threads + 1)
        ]
        if not until_empty:
            self._threads.append(
                threading.Thread(target=self._listen_loop, name=f"{self.name}-listen", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask every thread to stop after its current job and wait up to ``timeout`` seconds.

        Jobs claimed in the current batch but not yet started go back to ``pending``.
        """
        self._stop.set()
        self._notify_all()
        if threading.current_thread() not in self._threads:
            self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the threads to finish."""
        for thread in self._threads:
            thread.join(timeout)

    # -- internals -------------------------------------------------------------------------

    def _notify_all(self) -> None:
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    def _sleep(self, seen_generation: int) -> None:
        with self._wake:
            if self._generation == seen_generation and not self._stop.is_set():
                self._wake.wait(self.poll_interval)

    def _connect(self) -> Connection:
        return db.connect(self.dsn)

    def _loop(self, worker_id: str, until_empty: bool) -> None:
        conn: Connection | None = None
        pause = 0.1
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                    pause = 0.1
                generation = self._generation
                jobs = self.queue.claim(conn, worker_id, limit=self.batch_size, queues=self.queues)
                if not jobs:
                    if until_empty:
                        break
                    self._sleep(generation)
                    continue
                self._run_batch(conn, worker_id, jobs)
            except (psycopg.OperationalError, DatabaseUnavailableError) as exc:
                _log.warning("%s lost its connection (%s); reconnecting in %.1fs", worker_id, exc, pause)
                with self._lock:
                    self.stats.reconnects += 1
                if conn is not None:
                    conn.close()
                conn = None
                self._stop.wait(pause)
                pause = min(pause * 2, 5.0)
        if conn is not None:
            conn.close()

    def _run_batch(self, conn: Connection, worker_id: str, jobs: list[Job]) -> None:
        done: list[int] = []
        failed = 0
        for index, job in enumerate(jobs):
            if self._stop.is_set():
                self.queue.release(conn, [j.id for j in jobs[index:]])
                break
            handler = self.handlers.get(job.type)
            try:
                if handler is None:
                    raise LookupError(f"no handler for job type {job.type!r}")
                handler(job)
            except Exception as exc:  # noqa: BLE001 - any handler error fails the job
                self.queue.fail(conn, job.id, f"{type(exc).__name__}: {exc}", retry_delay=self.retry_delay)
                failed += 1
            else:
                done.append(job.id)
        self.queue.complete(conn, done)
        with self._lock:
            self.stats.completed[worker_id] += len(done)
            self.stats.failed[worker_id] += failed

    def _listen_loop(self) -> None:
        """Wake idle threads when a NOTIFY arrives; reconnect quietly if the connection drops."""
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    self.queue.listen(conn)
                    while not self._stop.is_set():
                        payloads = self.queue.wait(conn, timeout=0.5)
                        if payloads and (self.queues is None or set(payloads) & set(self.queues)):
                            self._notify_all()
            except (psycopg.Error, DatabaseUnavailableError) as exc:
                _log.warning("listener lost its connection (%s); polling continues", exc)
                self._stop.wait(1.0)
