"""What a worker holds, and how the outcomes of its jobs reach the database.

A :class:`~pgqueue_lab.core.worker.Worker` thread claims a batch and runs it job by job. Until the
database has recorded each outcome, the job belongs to the :class:`Batch` of that thread, in one
list per stage (waiting, running, done, failed). :class:`Holdings` keeps those batches under one
lock, and the rules that make the worker safe:

- a job leaves its batch only once its outcome is written, so a lost connection loses nothing
  and the heartbeat (:meth:`Holdings.beat`) keeps every held job's lease alive meanwhile;
- a heartbeat that does not return a job means it was rescued from this worker: it is
  forgotten, never started, never recorded (:meth:`Holdings.forget`);
- the housekeeper takes over the batch of a thread that cannot finish it soon (a handler past
  its timeout, a write hung for longer than a lease) and records it itself
  (:meth:`Holdings.take_over`, :meth:`Holdings.record_orphans`);
- a write the database refuses is retried job by job, so one bad row blocks nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import psycopg

from ..errors import DatabaseUnavailableError
from .queue import Connection, Job, Queue

_log = logging.getLogger("pgqueue_lab.core.worker")

#: Errors after which a thread reconnects and tries again (the server restarted, the network
#: dropped the connection): nothing is lost, nothing is given up.
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnavailableError)


def refused(exc: BaseException) -> bool:
    """Whether the database answered ``exc`` to a statement that it will answer again if sent
    again as it is: an error raised by the statement itself (a trigger, a constraint), or
    ``statement_timeout`` cancelling it. Such a write is retried job by job, never in a loop."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return True
    return isinstance(exc, psycopg.Error) and not isinstance(exc, CONNECTION_ERRORS)


@dataclass
class WorkerStats:
    """What a worker did, as the database recorded it.

    ``completed`` and ``failed`` count, per thread, the completions and failed attempts the
    database accepted (a job retried three times and then completed counts three failures and
    one completion). ``lost`` counts outcomes the database refused because the job had been
    rescued from this worker (its lease lapsed). ``errors`` lists the threads that stopped on
    an unexpected error, and the writes the database refused; and, once each, the schedules
    whose tick failed (``schedule_errors`` counts every failed tick; see
    :func:`pgqueue_lab.features.schedule.tick`).
    """

    completed: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    timed_out: int = 0
    rescued: int = 0
    reconnects: int = 0
    lost: int = 0
    schedule_errors: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def total_completed(self) -> int:
        return sum(self.completed.values())

    @property
    def total_failed(self) -> int:
        return sum(self.failed.values())


@dataclass
class Batch:
    """The jobs one worker thread holds, by stage. Changed only under :attr:`Holdings.lock`.

    A job stays in its list until the database has recorded its outcome, so the heartbeat
    keeps renewing its lease meanwhile; ``writing`` marks the ones whose write is in flight.
    """

    waiting: list[Job] = field(default_factory=list)  # claimed, not started
    current: Job | None = None  # its handler is running
    deadline: float | None = None  # monotonic time the current handler's timeout ends
    done: list[Job] = field(default_factory=list)  # succeeded, not yet recorded
    failures: list[tuple[Job, str, bool]] = field(default_factory=list)  # (job, error, retry)
    writing: set[int] = field(default_factory=set)  # ids whose outcome is being written
    write_started: float | None = None  # monotonic time the write in flight began
    lease_until: float = 0.0  # monotonic time until which every lease is known to be valid
    abandoned: bool = False  # the housekeeper took the batch over (timeout, stall, dead thread)

    def held(self) -> list[Job]:
        jobs = [*self.waiting, *self.done, *(job for job, _, _ in self.failures)]
        return jobs if self.current is None else [self.current, *jobs]

    def drop(self, ids: set[int]) -> None:
        """Remove these jobs from every list (recorded, or no longer ours)."""
        self.waiting = [job for job in self.waiting if job.id not in ids]
        self.done = [job for job in self.done if job.id not in ids]
        self.failures = [f for f in self.failures if f[0].id not in ids]


class Holdings:
    """The batches of one worker's threads, and the housekeeper's *orphans* (batches it took
    over), with the writes that record their outcomes.

    :param queue: the queue the jobs belong to.
    :param stats: updated with what the database accepted or refused.
    :param lease: seconds a claim stays valid without a heartbeat.
    :param retry_delay, max_delay: the backoff passed to :meth:`Queue.fail`.
    :param wake: called when jobs become pending again (a retry, a release), to wake idle threads.
    :param timeout_for: the handler timeout of a job, or ``None``.
    """

    def __init__(
        self,
        queue: Queue,
        stats: WorkerStats,
        *,
        lease: float,
        retry_delay: float,
        max_delay: float,
        wake: Callable[[], None],
        timeout_for: Callable[[Job], float | None],
    ) -> None:
        self.queue, self.stats, self.lease = queue, stats, lease
        self.retry_delay, self.max_delay = retry_delay, max_delay
        self._wake, self._timeout_for = wake, timeout_for
        self.lock = threading.Lock()
        self.batches: dict[str, Batch] = {}
        self.orphans = Batch()

    # -- what is held ------------------------------------------------------------------------

    def forget(self, batch: Batch, held: set[int]) -> None:
        """Drop from ``batch`` the jobs a heartbeat did not return (call under :attr:`lock`).

        They were rescued from this worker: never start them, never record them. The job whose
        handler runs now and jobs whose write is in flight are left alone (the database refuses
        their write anyway if they are lost).
        """
        keep = held | batch.writing | ({batch.current.id} if batch.current else set())
        lost = {job.id for job in batch.held()} - keep
        if lost:
            _log.warning("jobs %s were rescued from this worker (lease expired); skipping them", sorted(lost))
            batch.drop(lost)
            self.stats.lost += len(lost)

    def adopt(self, batch: Batch, current_error: str) -> None:
        """Move a batch's jobs to the orphans (call under :attr:`lock`). A job whose handler was
        running is failed with ``current_error``: it did (start to) run."""
        orphans = self.orphans
        orphans.waiting += batch.waiting
        orphans.done += batch.done
        orphans.failures += batch.failures
        if batch.current is not None:
            orphans.failures.append((batch.current, current_error, True))
        # Emptied, so that the thread's late call (a forget, a drop) finds nothing to touch.
        batch.waiting, batch.done, batch.failures = [], [], []
        batch.current = batch.deadline = None

    def orphan(self, worker_id: str, message: str) -> None:
        """A thread stops on an unexpected error: the housekeeper takes its jobs over."""
        with self.lock:
            batch = self.batches[worker_id]
            batch.abandoned = True
            self.adopt(batch, f"WorkerError: {message}")
            self.batches[worker_id] = Batch()
            self.stats.errors.append(message)

    def take_over(self) -> None:
        """Take over the batch of a thread that cannot finish it soon: its handler overran its
        timeout (the job is failed with a ``TimeoutError``), or a write of its outcomes has hung
        for longer than a lease (a stalled connection). :meth:`record_orphans` then records the
        finished jobs and releases the unstarted ones on the housekeeper's connection; the
        thread is free for a new batch when (if ever) its call returns, its late result ignored.
        """
        now = time.monotonic()
        with self.lock:
            for worker_id, batch in self.batches.items():
                if batch.abandoned:
                    continue
                job = batch.current
                if job is not None and batch.deadline is not None and now > batch.deadline:
                    limit = self._timeout_for(job) or 0.0
                    self.adopt(batch, f"TimeoutError: handler ran longer than {limit:g} s")
                    self.stats.timed_out += 1
                    _log.warning("job %d (%s) overran its %g s timeout", job.id, job.type, limit)
                elif batch.write_started is not None and now - batch.write_started > self.lease:
                    self.adopt(batch, "WorkerError: stopped")
                    _log.warning(
                        "%s: a write hung for over %g s; taking its batch over", worker_id, self.lease
                    )
                else:
                    continue
                batch.abandoned = True
                self.batches[worker_id] = Batch()

    def beat(self, conn: Connection) -> None:
        """Extend the leases of every job held; forget the ones rescued from this worker."""
        with self.lock:
            held_now = [(b, b.held()) for b in (*self.batches.values(), self.orphans) if b.held()]
        for batch, jobs in held_now:
            sent_at = time.monotonic()
            held = self.heartbeat(conn, jobs)
            with self.lock:
                if not batch.abandoned:
                    self.forget(batch, held)
                batch.lease_until = max(batch.lease_until, sent_at + self.lease)

    def heartbeat(self, conn: Connection, jobs: list[Job]) -> set[int]:
        """Extend the leases of ``jobs``; return the ids still held. A heartbeat the database
        refuses is retried job by job; a job whose own heartbeat is refused counts as held (it
        is not ours to give up: its lease runs out, and a rescue decides)."""
        try:
            renewed = set(self.queue.heartbeat(conn, jobs, self.lease))
            skipped = [job for job in jobs if job.id not in renewed]
            # Not renewed: rescued from us, or locked by another transaction (skipped). Only
            # the first is lost; the second keeps its place and is renewed once unlocked.
            return renewed | (set(self.queue.held(conn, skipped)) if skipped else set())
        except psycopg.Error as exc:
            if not refused(exc):
                raise
            _log.warning("the database refused a heartbeat of %d jobs (%s); one by one now", len(jobs), exc)
        held: set[int] = set()
        for job in jobs:
            try:
                held |= set(self.queue.heartbeat(conn, [job], self.lease))
            except psycopg.Error as exc:
                if not refused(exc):
                    raise
                _log.error("the database refused the heartbeat of job %d: %s", job.id, describe(exc))
                held.add(job.id)
        return held

    # -- recording outcomes ----------------------------------------------------------------------

    def record(self, conn: Connection, batch: Batch, worker_id: str, release_waiting: bool) -> None:
        """Write a batch's outcomes: completions first, then failures, then (if asked) release
        the jobs never started.

        A job leaves the batch only once its write has returned, so a lost connection loses
        nothing (the thread reconnects and calls this again) and the heartbeat keeps the lease
        alive meanwhile. A write the database *refuses* (a trigger, a constraint) is retried job
        by job, so one bad row cannot block the others; a job still refused is logged, counted
        in ``stats.errors`` and left to its lease (it is rescued and runs again).

        :raises psycopg.OperationalError: (and the other :data:`CONNECTION_ERRORS`) the
            connection was lost; the unwritten outcomes stay in the batch.
        """
        with self.lock:
            done = list(batch.done)
        if done:
            counts = self._write(batch, done, lambda jobs: self.queue.complete(conn, jobs))
            if counts is not None:
                self._count(worker_id, "completed", *counts)
        while True:
            with self.lock:
                if batch.abandoned or not batch.failures:
                    break
                job, error, retry = batch.failures[0]
            counts = self._write(batch, [job], partial(self._fail_jobs, conn, error, retry))
            if counts is not None:
                self._count(worker_id, "failed", *counts)
                if counts[0]:
                    self._wake()  # our own idle threads: the retry may be due before their poll
        if release_waiting:
            with self.lock:
                waiting = [] if batch.abandoned else list(batch.waiting)
            if waiting:
                counts = self._write(batch, waiting, lambda jobs: len(self.queue.release(conn, jobs)))
                if counts is not None:
                    self._count(worker_id, "released", *counts)
                    self._wake()

    def record_orphans(self, conn: Connection, worker_id: str) -> None:
        """Record (or release) what the housekeeper took over."""
        self.record(conn, self.orphans, worker_id, True)

    def _write(
        self, batch: Batch, jobs: list[Job], write: Callable[[list[Job]], int]
    ) -> tuple[int, int, int] | None:
        """Run one write for ``jobs`` of ``batch``; drop them from it once written.

        Returns ``(accepted, refused as lost, refused by an error)``, or ``None`` if the
        housekeeper took the batch over meanwhile (its own write counts). A connection error
        propagates, with the jobs still in the batch.
        """
        ids = {job.id for job in jobs}
        with self.lock:
            batch.writing, batch.write_started = ids, time.monotonic()
        try:
            try:
                accepted, errors = write(jobs), 0
            except psycopg.Error as exc:
                if not refused(exc):
                    raise
                _log.warning("the database refused a write of %d jobs (%s); one by one now", len(jobs), exc)
                accepted = errors = 0
                for job in jobs:
                    try:
                        accepted += write([job])
                    except psycopg.Error as one:
                        if not refused(one):
                            raise
                        errors += 1
                        self._refused(job, one)
                    with self.lock:
                        batch.drop({job.id})  # written (or refused for good): never again
        except BaseException:
            with self.lock:
                batch.writing, batch.write_started = set(), None
            raise  # a lost connection: the jobs stay in the batch, to be written after reconnecting
        with self.lock:
            batch.writing, batch.write_started = set(), None
            if batch.abandoned:
                return None
            batch.drop(ids)
        return accepted, len(jobs) - accepted - errors, errors

    def _fail_jobs(self, conn: Connection, error: str, retry: bool, jobs: list[Job]) -> int:
        return sum(
            self.queue.fail(
                conn, job, error, retry_delay=self.retry_delay, max_delay=self.max_delay, retry=retry
            )
            is not None
            for job in jobs
        )

    def _refused(self, job: Job, exc: psycopg.Error) -> None:
        message = f"the database refused to record job {job.id}: {describe(exc)}"
        _log.error("%s; it returns to pending when its lease expires", message)
        with self.lock:
            self.stats.errors.append(message)

    def _count(self, worker_id: str, what: str, accepted: int, lost: int, errors: int) -> None:
        with self.lock:
            if what == "completed":
                self.stats.completed[worker_id] += accepted
            elif what == "failed":
                self.stats.failed[worker_id] += accepted
            self.stats.lost += lost


def describe(exc: BaseException) -> str:
    """``"TypeName: message"``, even for an exception whose ``__str__`` itself raises."""
    try:
        text = str(exc)
    except BaseException as inner:  # noqa: BLE001 - a handler's exception may be anything
        text = f"<str() of the exception raised {type(inner).__name__}>"
    return f"{type(exc).__name__}: {text}"
