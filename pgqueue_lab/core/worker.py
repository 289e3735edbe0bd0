"""A worker: N threads, each with its own connection, running handlers by job type.

Each thread loops: claim a batch (one statement, ``FOR UPDATE SKIP LOCKED``), run the handler of
each job, then mark the successes completed in one statement (each failure is recorded as it
happens). When nothing is due it sleeps until a NOTIFY arrives, the next scheduled job is due,
or ``poll_interval`` passes (the polling fallback, so a lost notification never strands a job).

A heartbeat thread keeps the claims alive: it extends the lease of every job the worker
holds. A housekeeping thread takes over the batch of a handler that overran its timeout, and
rescues jobs whose lease expired because *another* worker crashed, hung or lost its connection.

The features (cancellation, the wake-up self-check, schedules, retention) take part through
one extension point, :class:`Extension`: this module imports none of them (see
:mod:`pgqueue_lab.features`).

What the worker promises, and how:

- **A finished job is never run again because of this worker.** A thread keeps each outcome
  (success or failure) until the database has recorded it; a lost connection is reopened and
  the outcomes are recorded then, while the housekeeper keeps their leases alive. A timeout,
  a stop or a reconnect gives back only jobs that were never started.
- **A run that lost its job changes nothing.** Every write presents the job's claim token
  (see :mod:`pgqueue_lab.core.queue`). Before starting a job, a thread that cannot be sure its lease
  is still valid (it was paused, say) asks the database first and skips jobs it no longer holds.
- **Nothing is stranded.** A thread that stops on an unexpected error hands its jobs to the
  housekeeper, which records or releases them; :meth:`Worker.run` then raises
  :class:`~pgqueue_lab.errors.WorkerError`. If even that fails, the leases expire and any worker
  rescues the jobs. Ctrl-C (``KeyboardInterrupt``) in :meth:`Worker.run` stops the worker
  gracefully, then re-raises.

Delivery stays *at least once*: a worker killed after a handler ran but before the database
recorded it leaves a job that runs again after its lease expires. Handlers must be idempotent.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import psycopg

from ..errors import DatabaseUnavailableError, InvalidInputError, PermanentJobError, WorkerError
from . import db, validate
from .holdings import CONNECTION_ERRORS, Batch, Holdings, WorkerStats, describe, refused
from .queue import Connection, Job, Queue

__all__ = ["EXTENSIONS", "Extension", "Handler", "Plugin", "Worker", "WorkerStats"]

Handler = Callable[[Job], Any]
_Step = Callable[[Connection], None]

_log = logging.getLogger(__name__)
#: libpq settings for the worker's long-lived connections (ignored on Unix sockets).
_TCP_OPTIONS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


class Extension:
    """The worker's extension point: a feature that takes part in a :class:`Worker`'s threads.

    A feature subclasses it and overrides the hooks it needs; each does nothing by default.
    Every worker builds the extensions :data:`EXTENSIONS` lists (cancellation, the wake-up
    self-check, the scheduler: :mod:`pgqueue_lab.features` fills it), and
    ``Worker(retention=...)`` adds one more. A hook that raises is treated like the worker's own
    step on that thread: in :meth:`beat` or :meth:`housekeeping` it is logged and runs again next
    round; a database error in a listener hook makes the listener reconnect (polling goes on).
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def threads(self) -> list[threading.Thread]:
        """Helper threads of its own, started after the worker's; they end when
        :attr:`stopping` is set."""
        return []

    def subscribe(self, conn: Connection) -> None:
        """On the listener's connection, before its ``LISTEN`` on the jobs channel."""

    def subscribed(self, conn: Connection) -> None:
        """On the listener's connection, right after that ``LISTEN`` (at every reconnect)."""

    def notified(self, notes: Sequence[psycopg.Notify]) -> None:
        """The notifications the listener just received, of every channel it listens to."""

    def beat(self, conn: Connection) -> None:
        """On the heartbeat's connection, right after it renewed the leases."""

    def housekeeping(self, conn: Connection) -> None:
        """One more step of the housekeeper, after its own (take-over, orphans, rescue)."""

    # what an extension may use of its worker
    @property
    def holdings(self) -> Holdings:
        """What the worker holds (its threads' batches and the orphans)."""
        return self.worker._holdings

    @property
    def lock(self) -> threading.Lock:
        """The worker's lock over its batches and its stats."""
        return self.worker._lock

    @property
    def stopping(self) -> threading.Event:
        """The event set when the worker stops."""
        return self.worker._stop

    def connect(self) -> Connection:
        """A new connection, made as the worker makes its own (see :meth:`Worker._connect`)."""
        return self.worker._connect()


#: What every :class:`Worker` builds when it is made, in this order: a function of the worker
#: that returns its :class:`Extension`, or ``None`` when the worker's settings do not ask for
#: it. :mod:`pgqueue_lab.features` fills it when the package is imported.
EXTENSIONS: list[Callable[[Worker], Extension | None]] = []


class Plugin(Protocol):
    """What ``Worker(retention=...)`` takes (a :class:`~pgqueue_lab.features.retention.Retention`):
    a setting that makes the worker's :class:`Extension`."""

    def extension(self, worker: Worker) -> Extension:
        """The extension this setting adds to ``worker``."""
        ...


class Worker:
    """Run jobs from a :class:`~pgqueue_lab.core.queue.Queue` in ``threads`` threads.

    :param queue: the queue to serve.
    :param handlers: job type -> function taking a :class:`Job`. A handler that raises fails the
        job (the exception text is recorded; it is retried while it has attempts left, unless the
        exception is a :class:`~pgqueue_lab.errors.PermanentJobError`); a job whose type has no
        handler fails too. ``sys.exit()`` in a handler fails its job, not the worker.
    :param dsn: where to connect (default :func:`pgqueue_lab.core.db.get_dsn`).
    :param threads: worker threads, each with its own connection.
    :param batch_size: jobs claimed per statement.
    :param poll_interval: seconds an idle thread waits for a NOTIFY before claiming anyway.
    :param queues: serve only these named queues (default: all).
    :param name: prefix of thread names and ``worker_id`` values (``name-1``, ``name-2``...).
        Default: ``worker-<pid>-<6 random hex digits>``, different for every ``Worker``.
    :param lease: seconds a claim stays valid without a heartbeat. The worker renews it every
        ``lease / 3`` seconds (and at least once a second); if the worker dies, other workers rescue
        its jobs after this long.
    :param job_timeout: seconds a handler may run before its job is failed (and retried if it
        has attempts left); ``timeouts`` sets it per job type. Python cannot stop a thread, so
        an overrunning handler keeps its thread busy and its late result is ignored; the rest of
        its batch is recorded or released at once.
    :param retry_delay: base of the exponential backoff between attempts, in seconds.
    :param max_delay: the longest backoff, in seconds.
    :param listen: wake idle threads with ``LISTEN``/``NOTIFY`` (checked at start: see
        :func:`pgqueue_lab.features.wakeups.self_check`). ``False``: poll only, every ``poll_interval``
        seconds (for a pooler in transaction mode, which does not support ``LISTEN``).
    :param retention: move or delete finished jobs on a schedule (see
        :class:`~pgqueue_lab.features.retention.Retention`): the housekeeper runs it every
        ``retention.every`` seconds; ``worker.retention`` is then its extension, which counts
        what it moved. Default: finished jobs stay in ``jobs``.
    :param per_key: at most this many running jobs per ``concurrency_key``, and ``fair``:
        round-robin across keys (see :mod:`pgqueue_lab.features.limits`; every worker of the
        queue should use the same settings). A job cancelled while it runs gets
        ``job.cancel_requested`` (see :mod:`pgqueue_lab.features.cancel`).
    :param schedules: also run a scheduler thread for the queue's periodic jobs (any number of
        workers may; see :mod:`pgqueue_lab.features.schedule`). A schedule whose tick fails is logged,
        counted in ``stats.schedule_errors`` and listed once in ``stats.errors`` (so
        :meth:`run` then raises :class:`~pgqueue_lab.errors.WorkerError` at its end); the
        other schedules go on.
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
        retention: Plugin | None = None,
        listen: bool = True,
        per_key: int | None = None,
        fair: bool = False,
        schedules: bool = False,
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
        default_name = f"worker-{os.getpid()}-{secrets.token_hex(3)}"
        self.name = validate.job_type(default_name if name is None else name, what="worker name")
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
        self.per_key = None if per_key is None else validate.per_key(per_key)
        self.fair, self.schedules = bool(fair), bool(schedules)
        self.dsn = dsn or db.get_dsn()
        self.listen = bool(listen)
        #: Whether the listener's start-up self-check got its own NOTIFY back (None: not run).
        self.wakeups_ok: bool | None = None
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._workers_done = threading.Event()
        self._wake = threading.Condition()
        self._generation = 0
        self._holdings = Holdings(
            queue,
            self.stats,
            lease=self.lease,
            retry_delay=self.retry_delay,
            max_delay=self.max_delay,
            wake=self._notify_all,
            timeout_for=self._timeout_for,
        )
        self._lock = self._holdings.lock  # one lock for the batches and the stats
        self._batches = self._holdings.batches  # worker id -> the batch its thread holds
        self._running = 0
        self._workers: list[threading.Thread] = []
        self._helpers: list[threading.Thread] = []
        if retention is not None and not callable(getattr(retention, "extension", None)):
            raise InvalidInputError(f"retention must be a Retention, got {type(retention).__name__}")
        #: The extension of ``retention`` (``None`` without one): what it moved and forgot.
        self.retention = None if retention is None else retention.extension(self)
        built = (make(self) for make in EXTENSIONS)
        self.extensions: list[Extension] = [e for e in built if e is not None]
        if self.retention is not None:
            self.extensions.append(self.retention)

    def __repr__(self) -> str:
        return f"Worker({self.queue!r}, name={self.name!r}, threads={self.threads})"

    # -- public ----------------------------------------------------------------------------

    def run(self, *, until_empty: bool = True) -> WorkerStats:
        """Start the threads and wait for them.

        With ``until_empty`` the worker stops once no job of its queues is pending or running
        (a job scheduled for later is waited for); otherwise it runs until :meth:`stop`.
        ``KeyboardInterrupt`` (Ctrl-C, a notebook's "Interrupt kernel") or ``SystemExit``
        while waiting stops the worker gracefully (see :meth:`stop`) and is re-raised.

        :raises WorkerError: a thread stopped on an unexpected error (after all have stopped).
        """
        self.start(until_empty=until_empty)  # interrupted here, it stops what it started
        try:
            self.join()
        except BaseException:
            self.stop()
            raise
        if self.stats.errors:
            raise WorkerError("; ".join(self.stats.errors))
        return self.stats

    def start(self, *, until_empty: bool = False) -> None:
        """Start the worker threads, the housekeeper and (unless ``until_empty``) a LISTEN
        thread, and return at once.

        :raises DatabaseUnavailableError: the database cannot be reached.
        :raises QueueNotFoundError: the queue was never created in this database.
        """
        if any(t.is_alive() for t in self._workers + self._helpers):
            raise WorkerError(
                f"{self.name} is still running or stopping: call join() (or stop() without a "
                "timeout) before starting it again"
            )
        with self._connect() as conn:
            self.queue.has_work(conn, self.queues)  # fails here, clearly, if the queue is missing
        self._stop.clear()
        self._workers_done.clear()
        self.stats.errors.clear()
        self._batches.clear()
        self._batches.update({f"{self.name}-{i}": Batch() for i in range(1, self.threads + 1)})
        self._running = self.threads
        self._workers = [
            threading.Thread(target=self._loop, args=(worker_id, until_empty), name=worker_id)
            for worker_id in self._batches
        ]
        self._helpers = [
            threading.Thread(target=self._heartbeat, name=f"{self.name}-heartbeat", daemon=True),
            threading.Thread(target=self._housekeeper, name=f"{self.name}-housekeeper", daemon=True),
        ]
        if not until_empty and self.listen:
            self._helpers.append(
                threading.Thread(target=self._listener, name=f"{self.name}-listener", daemon=True)
            )
        for extension in self.extensions:
            self._helpers += extension.threads()
        try:
            for thread in self._workers + self._helpers:
                thread.start()
        except BaseException:
            self._abandon_start()
            raise

    def _abandon_start(self) -> None:
        """Interrupted (Ctrl-C) while starting threads: those not started never will be. Count
        them out, then stop the ones that run, gracefully (:meth:`stop`)."""
        with self._lock:
            unstarted = [t for t in self._workers if t.ident is None]
            self._workers = [t for t in self._workers if t.ident is not None]
            self._helpers = [t for t in self._helpers if t.ident is not None]
            self._running -= len(unstarted)
            if self._running == 0:
                self._workers_done.set()
        self.stop()

    def stop(self, timeout: float | None = None) -> None:
        """Ask every thread to stop after its current job and wait up to ``timeout`` seconds.

        Jobs claimed but not yet started go back to ``pending``; finished ones are recorded.
        """
        self._stop.set()
        self._notify_all()
        if threading.current_thread() not in self._workers:
            self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait up to ``timeout`` seconds for the worker threads, then for the helpers."""
        # An Event, not Thread.join: on Python <= 3.12 an interrupted Thread.join can leave the
        # thread looking dead to is_alive(), which stopped the heartbeat of live threads.
        if not self._workers_done.wait(timeout):
            return
        self._stop.set()
        for thread in self._helpers:  # they finish within a beat, unless a statement hangs
            thread.join(self.lease + 5 if timeout is None else timeout)
            if thread.is_alive():
                _log.warning("%s is stuck in a statement; not waiting for it any longer", thread.name)

    # -- the worker threads ----------------------------------------------------------------

    def _connect(self) -> Connection:
        """A connection for one of the worker's threads. Over TCP, keepalives and
        ``tcp_user_timeout`` end a connection whose peer vanished (a network partition, a host
        that died) within about 30 s instead of the system default of hours."""
        return db.connect(self.dsn, **_TCP_OPTIONS)

    def _notify_all(self) -> None:
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    def _idle(self, conn: Connection, seen_generation: int, blocked: bool) -> bool:
        """Sleep until a NOTIFY, the next due job, or the poll interval, whichever comes first.

        Returns whether a due job could not be claimed (so it is locked by another session):
        the first time, the thread looks again at once (the job may have fallen due just after
        the claim); the second time in a row it waits for the next job that is not yet due.
        """
        due = self.queue.next_due(conn, self.queues)
        locked = due == 0.0
        if locked and blocked:
            due = self.queue.next_due(conn, self.queues, future_only=True)
            timeout = self.poll_interval if due is None else min(self.poll_interval, due + 0.01)
        elif locked:
            timeout = 0.01
        else:
            timeout = self.poll_interval if due is None else min(self.poll_interval, due + 0.01)
        with self._wake:
            if self._generation == seen_generation and not self._stop.is_set():
                self._wake.wait(timeout)
        return locked

    def _loop(self, worker_id: str, until_empty: bool) -> None:
        conn: Connection | None = None
        pause, blocked = 0.1, False
        try:
            while not self._stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = self._connect()
                        pause = 0.1
                    if self._batches[worker_id].held():
                        self._record(conn, worker_id, release_waiting=True)  # after a reconnect
                    generation = self._generation
                    claimed_at = time.monotonic()
                    jobs = self.queue.claim(
                        conn, worker_id, limit=self.batch_size, queues=self.queues, lease=self.lease,
                        per_key=self.per_key, fair=self.fair,
                    )  # fmt: skip
                    if jobs:
                        blocked = False
                        with self._lock:
                            self._batches[worker_id] = Batch(
                                waiting=jobs, lease_until=claimed_at + self.lease
                            )
                        self._run_batch(conn, worker_id)
                        if until_empty:
                            self._notify_all()  # a drain-mode thread may be waiting for this batch
                    elif until_empty and not self.queue.has_work(conn, self.queues):
                        break
                    else:
                        blocked = self._idle(conn, generation, blocked)
                except CONNECTION_ERRORS as exc:
                    # Keep the batch: its outcomes are recorded after the reconnect, and the
                    # housekeeper keeps its leases alive meanwhile.
                    _log.warning("%s lost its connection (%s); reconnecting in %.1fs", worker_id, exc, pause)
                    with self._lock:
                        self.stats.reconnects += 1
                    if conn is not None:
                        conn.close()
                    conn = None
                    self._stop.wait(pause)
                    pause = min(pause * 2, 5.0)
            if self._batches[worker_id].held():  # stopped while outcomes wait to be recorded
                try:
                    conn = conn if conn is not None and not conn.closed else self._connect()
                    self._record(conn, worker_id, release_waiting=True)
                except CONNECTION_ERRORS:
                    with self._lock:  # the housekeeper tries again
                        self._holdings.adopt(self._batches[worker_id], "WorkerError: stopped")
                        self._batches[worker_id] = Batch()
        except BaseException as exc:  # noqa: BLE001 - a thread must not die holding jobs
            self._orphan(worker_id, exc)
        finally:
            if conn is not None:
                conn.close()
            with self._lock:
                self._running -= 1
                if self._running == 0:
                    self._workers_done.set()

    def _orphan(self, worker_id: str, exc: BaseException) -> None:
        """A thread stops on an unexpected error: hand its jobs to the housekeeper, say so."""
        message = f"{worker_id} stopped: {describe(exc)}"
        _log.error("%s; the housekeeper records or releases its jobs", message, exc_info=exc)
        self._holdings.orphan(worker_id, message)

    def _timeout_for(self, job: Job) -> float | None:
        return self.timeouts.get(job.type, self.job_timeout)

    def _run_batch(self, conn: Connection, worker_id: str) -> None:
        batch = self._batches[worker_id]
        margin = max(0.1, min(self.lease / 3, 1.0))
        while True:
            with self._lock:
                if batch.abandoned:
                    return  # the housekeeper took the batch over (a timeout)
                if self._stop.is_set() or not batch.waiting:
                    break
                unsure = time.monotonic() + margin > batch.lease_until
            if unsure:  # paused, or the heartbeat is late: ask before starting anything
                asked_at = time.monotonic()
                with self._lock:
                    batch.write_started = asked_at  # a hung heartbeat counts as a hung write
                try:
                    held = self._holdings.heartbeat(conn, batch.held())
                finally:
                    with self._lock:
                        batch.write_started = None
                with self._lock:
                    if batch.abandoned:
                        return  # the housekeeper took the batch over meanwhile
                    self._holdings.forget(batch, held)
                    batch.lease_until = asked_at + self.lease
                continue
            with self._lock:
                job = batch.waiting.pop(0)
                timeout = self._timeout_for(job)
                batch.current = job
                batch.deadline = None if timeout is None else time.monotonic() + timeout
            error, retry = self._call(job)
            with self._lock:
                if batch.abandoned:
                    return  # timed out: the housekeeper failed it and took the rest
                batch.current = batch.deadline = None
                if error is None:
                    batch.done.append(job)
                else:
                    batch.failures.append((job, error, retry))
            if error is not None:  # a failure is recorded at once: its retry is due sooner
                self._record_batch(conn, batch, worker_id, release_waiting=False)
        self._record_batch(conn, batch, worker_id, release_waiting=True)

    def _record(self, conn: Connection, worker_id: str, *, release_waiting: bool = False) -> None:
        """Write the outcomes of this thread's batch (see :meth:`Holdings.record`)."""
        self._record_batch(conn, self._batches[worker_id], worker_id, release_waiting)

    def _record_batch(self, conn: Connection, batch: Batch, worker_id: str, release_waiting: bool) -> None:
        self._holdings.record(conn, batch, worker_id, release_waiting)

    def _call(self, job: Job) -> tuple[str | None, bool]:
        """Run the job's handler; return (error text or ``None`` on success, whether to retry).

        Any exception fails only the job, ``SystemExit`` and ``KeyboardInterrupt`` raised by the
        handler included: in a worker thread they would otherwise end the thread silently.
        """
        handler = self.handlers.get(job.type)
        if handler is None:
            return f"LookupError: no handler for job type {job.type!r}", True
        try:
            handler(job)
        except PermanentJobError as exc:
            _log.warning("job %d (%s) failed permanently: %s", job.id, job.type, describe(exc))
            return describe(exc), False
        except BaseException as exc:  # noqa: BLE001 - any handler error fails the job
            _log.warning("job %d (%s) failed on attempt %d", job.id, job.type, job.attempts, exc_info=exc)
            return describe(exc), True
        return None, True

    # -- helper threads --------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Extend the lease of every job held, every ``lease / 3`` seconds, on a connection of
        its own: a slow write or rescue of the housekeeper never delays it."""
        self._helper_loop("heartbeat", (self._beat,), final=())

    def _housekeeper(self) -> None:
        """Take over overrunning or stalled batches, record what it took over, rescue other
        workers' jobs. Each step runs even if another failed."""
        steps = [
            e.housekeeping for e in self.extensions if type(e).housekeeping is not Extension.housekeeping
        ]
        self._helper_loop("housekeeper", (self._take_over, self._record_orphans, self._rescue, *steps),
                          final=(self._record_orphans,))  # fmt: skip
        left = self._holdings.orphans.held()
        if left:
            _log.error(
                "%d jobs could not be recorded or released; they return to pending when their "
                "lease expires (within %g s)",
                len(left),
                self.lease,
            )

    def _helper_loop(
        self,
        name: str,
        steps: Sequence[Callable[[Connection], None]],
        final: Sequence[Callable[[Connection], None]],
    ) -> None:
        """Run ``steps`` every ``lease / 3`` seconds (at least once a second) until the worker
        threads are done, then ``final`` once, reconnecting after a lost connection."""
        interval = max(0.1, min(self.lease / 3, 1.0))
        conn: Connection | None = None
        try:
            while True:
                finished = self._workers_done.is_set()
                for step in final if finished else steps:
                    try:
                        if conn is None or conn.closed:
                            conn = self._connect()
                        step(conn)
                    except CONNECTION_ERRORS as exc:
                        _log.warning("%s lost its connection (%s)", name, exc)
                        if conn is not None:
                            conn.close()
                        conn = None
                    except Exception as exc:  # noqa: BLE001 - a helper must outlive any error
                        _log.error("%s: %s", name, describe(exc), exc_info=exc)
                if finished:
                    break
                self._workers_done.wait(interval)
        finally:
            if conn is not None:
                conn.close()

    def _rescue(self, conn: Connection) -> None:
        """Rescue every job whose lease expired; if the database refuses that (one row a trigger
        will not let go, a timeout), rescue them one by one so the others still come back."""
        try:
            rescued = self.queue.rescue(conn)
        except psycopg.Error as exc:
            if not refused(exc):
                raise
            _log.warning("the database refused a rescue (%s); one job at a time now", exc)
            rescued = []
            for job_id in self.queue.expired(conn):
                try:
                    rescued += self.queue.rescue(conn, [job_id])
                except psycopg.Error as one:
                    if not refused(one):
                        raise
                    _log.error("the database refused to rescue job %d: %s", job_id, describe(one))
        if rescued:
            with self._lock:
                self.stats.rescued += len(rescued)
            self._notify_all()

    def _record_orphans(self, conn: Connection) -> None:
        self._holdings.record_orphans(conn, f"{self.name}-housekeeper")

    def _take_over(self, conn: Connection) -> None:
        self._holdings.take_over()

    def _beat(self, conn: Connection) -> None:
        self._holdings.beat(conn)
        for extension in self.extensions:
            extension.beat(conn)

    def _listener(self) -> None:
        """Wake idle threads when a NOTIFY arrives; reconnect quietly if the connection drops."""
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    for extension in self.extensions:
                        extension.subscribe(conn)  # first: the jobs channel's LISTEN is the last query
                    self.queue.listen(conn)
                    for extension in self.extensions:
                        extension.subscribed(conn)
                    while not self._stop.is_set():
                        notes = list(conn.notifies(timeout=0.5, stop_after=1))
                        for extension in self.extensions:
                            extension.notified(notes)
                        payloads = [n.payload for n in notes if n.channel == self.queue.channel]
                        if payloads and (self.queues is None or set(payloads) & set(self.queues)):
                            self._notify_all()
            except (psycopg.Error, DatabaseUnavailableError) as exc:
                _log.warning("listener lost its connection (%s); polling continues", exc)
                self._stop.wait(1.0)
