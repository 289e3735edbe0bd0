"""The queue: create it, enqueue, claim, complete, fail, wait for work.

Every method takes the connection to use as its first argument, so you decide which
transaction it runs in. With an autocommit connection (what :func:`pgqueue_lab.connect` gives)
each call is its own transaction; inside ``with conn.transaction():`` the calls commit or roll
back together with your own statements (*transactional enqueue*).

On a connection that is *not* in autocommit mode (psycopg's default) the rules are psycopg's:
a call made while no transaction is open begins one and commits it before returning, reads
included, so nothing is left open behind your back; a call made while your own transaction is
open joins it, and your ``commit()`` decides.

A claimed :class:`Job` carries a *claim token*. ``complete``, ``fail``, ``heartbeat`` and
``release`` take the :class:`Job` objects themselves, not bare ids, and the database checks the
token on every write: once a lease lapses and the job is rescued, nothing this run does can
change it any more (*fencing*).

The features reach into the queue at four documented places, :class:`QueueExtensions`
(statements for :meth:`Queue.create`, the claim with ``per_key``/``fair``, enqueueing jobs with
keys): this module imports no feature, and :mod:`pgqueue_lab.features` plugs them in.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID, uuid4

import psycopg

from ..errors import InvalidInputError, QueueError, QueueNotFoundError
from . import sql, validate

Connection = psycopg.Connection[Any]

#: How many times a job may run before it stays ``failed`` (a dead letter). A crash or a lost
#: connection counts as an attempt too, so 1 would dead-letter every job caught in a restart.
#: River and Oban default to 20-25; 5 lets a learner watch a job reach the dead-letter state
#: within seconds (backoff 1 + 2 + 4 + 8 s).
DEFAULT_MAX_ATTEMPTS = 5

#: How many times :meth:`Queue.requeue`'s :data:`~pgqueue_lab.core.sql.REQUEUE_SKIP_HELD` runs again
#: when a job's ``unique_key`` was taken by a job that committed after the statement began (the
#: statement did not see it, the index did).
REQUEUE_RETRIES = 3

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """A claimed job, as a handler receives it.

    ``token`` is the claim token the database gave this run of the job; pass the ``Job`` itself
    to :meth:`Queue.complete`, :meth:`Queue.fail`, :meth:`Queue.heartbeat` and
    :meth:`Queue.release`, which present it.

    A long handler may look at :attr:`cancel_requested` and return early: the job was cancelled
    (:func:`pgqueue_lab.features.cancel.cancel`) and its outcome will not be recorded.
    """

    id: int
    queue: str
    type: str
    payload: Any
    attempts: int
    max_attempts: int
    token: UUID | None = None
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    @property
    def cancel_requested(self) -> bool:
        """Whether this job was cancelled while it ran (set by the worker when it hears of it)."""
        return self._cancel.is_set()

    def request_cancel(self) -> None:
        """Mark the job cancelled for its handler (the worker calls it; the database already
        says ``cancelled``)."""
        self._cancel.set()


@dataclass(frozen=True)
class NewJob:
    """One job for :meth:`Queue.enqueue_many`; only ``type`` is required. ``unique_key`` and
    ``concurrency_key``: see :meth:`Queue.enqueue`."""

    type: str
    payload: Any = None
    queue: str = "default"
    priority: int = 0
    delay: float = 0.0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    unique_key: str | None = None
    concurrency_key: str | None = None


def _new_job(item: NewJob | tuple[Any, ...] | Mapping[str, Any], index: int) -> NewJob:
    if isinstance(item, NewJob):
        return item
    try:
        if isinstance(item, Mapping):
            return NewJob(**item)
        if isinstance(item, tuple):
            return NewJob(*item)
    except TypeError as exc:
        raise InvalidInputError(f"job #{index} of the batch is malformed: {exc}") from None
    raise InvalidInputError(
        f"job #{index} of the batch must be a NewJob, a (type, payload) tuple or a dict, "
        f"got {type(item).__name__}"
    )


def _atomic(conn: Connection) -> AbstractContextManager[Any]:
    """The transaction one statement needs.

    On an autocommit connection outside any transaction a single statement is already atomic
    (its own transaction), so no ``BEGIN``/``COMMIT`` round trips are spent on it. Inside the
    caller's transaction it runs in a savepoint, which commits or rolls back with the caller's.
    On a connection that is not in autocommit mode, a transaction is begun and committed.
    """
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return nullcontext()
    return conn.transaction()


def _by_claim(jobs: Job | Iterable[Job], what: str) -> dict[UUID, list[int]]:
    """Group claimed jobs by claim token: ``{token: [ids sorted]}``, one entry per claim (sorted
    ids: concurrent writers lock rows in one order). Refuses anything that is not a
    :class:`Job` from :meth:`Queue.claim`."""
    items: list[Any] = (
        list(jobs) if isinstance(jobs, Iterable) and not isinstance(jobs, (Job, str, bytes)) else [jobs]
    )
    groups: dict[UUID, list[int]] = {}
    for item in items:
        if not isinstance(item, Job) or item.token is None:
            raise InvalidInputError(
                f"{what}() takes the Job objects that claim() returned (their claim token proves "
                f"this run still holds them), got {type(item).__name__}: {item!r}"
            )
        groups.setdefault(item.token, []).append(item.id)
    return {token: sorted(ids) for token, ids in groups.items()}


def _plain(job: NewJob) -> bool:
    """True if ``job`` has a clean type and queue and the default numbers (no checks needed)."""
    return (
        type(job.type) is str
        and job.type.strip() == job.type != ""
        and job.queue == "default"
        and type(job.priority) is int
        and job.priority == 0
        and type(job.delay) in (int, float)
        and job.delay == 0
        and type(job.max_attempts) is int
        and job.max_attempts == DEFAULT_MAX_ATTEMPTS
    )


# -- the extension points -----------------------------------------------------------------------

#: ``claim(queue, conn, params, per_key, fair)``: the rows of a claim with ``per_key``/``fair``.
KeyedClaim = Callable[["Queue", Connection, dict[str, Any], "int | None", bool], list[Any]]
#: ``enqueue(queue, conn, params, unique_key, concurrency_key)``: the id of a job with keys.
KeyedEnqueue = Callable[["Queue", Connection, dict[str, Any], object, object], int]
#: ``enqueue_many(queue, conn, jobs, rows)``: the ids of a batch in which some job has a key.
KeyedEnqueueMany = Callable[["Queue", Connection, Sequence["NewJob"], list[dict[str, Any]]], list[int]]
_T = TypeVar("_T")


@dataclass
class QueueExtensions:
    """What the features add to every :class:`Queue`: the extension points of this module.

    :mod:`pgqueue_lab.features` fills :data:`EXTENSIONS` when the package is imported (any
    import of ``pgqueue_lab`` runs it first). The plain paths never look here: a claim without
    ``per_key``/``fair`` runs :data:`~pgqueue_lab.core.sql.CLAIM`, a job without keys
    :data:`~pgqueue_lab.core.sql.ENQUEUE`.
    """

    #: More statements for :meth:`Queue.create`, run after the core's, in order.
    schema: list[str] = field(default_factory=list)
    #: The claim with ``per_key`` or ``fair`` (:func:`pgqueue_lab.features.limits.claim`).
    claim: KeyedClaim | None = None
    #: Enqueueing one job with a key (:func:`pgqueue_lab.features.unique.enqueue_keyed`).
    enqueue: KeyedEnqueue | None = None
    #: Enqueueing a batch with keys (:func:`pgqueue_lab.features.unique.enqueue_many`).
    enqueue_many: KeyedEnqueueMany | None = None


#: The queue's extension points (see :class:`QueueExtensions`).
EXTENSIONS = QueueExtensions()


def _extension(hook: _T | None, what: str) -> _T:
    if hook is None:
        raise QueueError(f"{what} needs pgqueue_lab.features, which plugs it in when pgqueue_lab is imported")
    return hook


class Queue:
    """A job queue living in its own PostgreSQL schema.

    :param schema: the schema that holds the ``jobs`` table; each notebook and test uses its own,
        so they never collide. Validated at once (see :func:`pgqueue_lab.core.validate.schema_name`).
    """

    def __init__(self, schema: str = "pgqueue_lab") -> None:
        self.schema = validate.schema_name(schema)
        #: The LISTEN/NOTIFY channel announcing new jobs; the payload is the job's queue name.
        self.channel = f"{self.schema}_jobs"

    def __repr__(self) -> str:
        return f"Queue(schema={self.schema!r})"

    def _q(self, statement: str) -> psycopg.sql.Composed:
        return sql.compose(statement, self.schema)

    @contextmanager
    def _tx(self, conn: Connection, statements: int = 1) -> Iterator[None]:
        """Run the block as one transaction (see :func:`_atomic`; a block of several statements
        always gets a transaction of its own, so they apply together or not at all); a missing
        queue table becomes one clear :class:`~pgqueue_lab.errors.QueueNotFoundError`."""
        try:
            with _atomic(conn) if statements <= 1 else conn.transaction():
                yield
        except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName) as exc:
            if self.schema not in str(exc):
                raise
            raise QueueNotFoundError(
                f"the queue {self.schema!r} does not exist in this database: create it first with "
                f"Queue({self.schema!r}).create(conn)"
            ) from None

    # -- schema ----------------------------------------------------------------------------

    def create(self, conn: Connection) -> None:
        """Create the schema, the ``jobs`` table and its partial indexes, the paused queues the
        claim reads (analysed at once, so the planner knows it is small), and then the features'
        indexes and tables (:attr:`QueueExtensions.schema`: unique keys, key turns, schedules).
        Idempotent; on a queue made by an older version it adds what is missing."""
        with conn.transaction():
            for statement in (
                sql.CREATE_SCHEMA,
                sql.CREATE_TABLE,
                sql.CREATE_CLAIM_INDEX,
                sql.CREATE_LEASE_INDEX,
                sql.CREATE_FEATURE_COLUMNS,
                sql.CREATE_PAUSED_TABLE,
                sql.ANALYZE_PAUSED_TABLE,
                *EXTENSIONS.schema,  # the features' indexes and tables
            ):
                conn.execute(self._q(statement))

    def drop(self, conn: Connection) -> None:
        """Drop the schema and everything in it (idempotent)."""
        with conn.transaction():
            conn.execute(self._q(sql.DROP_SCHEMA))

    # -- producing -------------------------------------------------------------------------

    def enqueue(
        self,
        conn: Connection,
        type: str,
        payload: Any = None,
        *,
        queue: str = "default",
        priority: int = 0,
        delay: float = 0.0,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        notify: bool = True,
        unique_key: str | None = None,
        concurrency_key: str | None = None,
    ) -> int:
        """Insert one job and NOTIFY the channel, in one transaction. Returns the job id.

        :param type: which handler runs the job (a non-empty string).
        :param payload: any JSON-serialisable value, stored as ``jsonb`` (``None`` means ``{}``).
        :param delay: seconds from now (database clock) before the job may be claimed.
        :param max_attempts: how many times the job may run before it stays ``failed``.
        :param notify: announce the job (``NOTIFY``). ``False``: workers find it when they poll
            (``Worker(..., listen=False)``); the commit then takes no server-wide lock. A job with
            a key is always announced.
        :param unique_key: while a job with this key is pending or running, enqueueing another
            inserts nothing and returns that job's id (see :mod:`pgqueue_lab.features.unique`).
        :param concurrency_key: the key a claim with ``per_key`` limits (a customer, a tenant).
        :raises InvalidInputError: before anything is sent, if an argument is unusable.
        """
        params = self._job_params(NewJob(type, payload, queue, priority, delay, max_attempts), None)
        if unique_key is not None or concurrency_key is not None:  # always announced
            keyed = _extension(EXTENSIONS.enqueue, "a job with a key")
            return keyed(self, conn, params, unique_key, concurrency_key)
        params["channel"] = self.channel
        with self._tx(conn):
            row = conn.execute(self._q(sql.ENQUEUE if notify else sql.ENQUEUE_QUIET), params).fetchone()
        assert row is not None
        return int(row[0])

    def enqueue_many(
        self,
        conn: Connection,
        jobs: Iterable[NewJob | tuple[Any, ...] | Mapping[str, Any]],
        *,
        notify: bool = True,
    ) -> list[int]:
        """Insert many jobs in one statement (one round trip) and NOTIFY once per queue.

        :param jobs: :class:`NewJob` objects, ``(type, payload)`` tuples or dicts of NewJob fields.
        :param notify: announce the jobs (``False``: polling workers find them; jobs with a key
            are always announced).
        :returns: the new ids, in the order given (with a ``unique_key``: the id of the job that
            holds the key, new or already there).
        :raises InvalidInputError: naming the first bad job; nothing is inserted.
        """
        items = [_new_job(item, i) for i, item in enumerate(jobs)]
        rows = [self._job_params(job, i, check_payload=False) for i, job in enumerate(items)]
        if not rows:
            return []
        if any(job.unique_key is not None or job.concurrency_key is not None for job in items):
            return _extension(EXTENSIONS.enqueue_many, "a job with a key")(self, conn, items, rows)
        params = {"jobs": validate.batch_json(rows), "channel": self.channel}
        with self._tx(conn):
            statement = sql.ENQUEUE_MANY if notify else sql.ENQUEUE_MANY_QUIET  # announced or not
            return sorted(int(r[0]) for r in conn.execute(self._q(statement), params).fetchall())

    @staticmethod
    def _job_params(job: NewJob, index: int | None, *, check_payload: bool = True) -> dict[str, Any]:
        """Check one job's fields; the payload becomes JSON text (or is left for
        :func:`~pgqueue_lab.core.validate.batch_json` to check with the whole batch)."""
        payload = {} if job.payload is None else job.payload
        where = "" if index is None else f" (job #{index} of the batch)"
        try:
            if not check_payload and _plain(job):  # the common case, checked cheaply
                fields = {
                    "type": job.type,
                    "queue": job.queue,
                    "priority": 0,
                    "delay": 0,
                    "max_attempts": job.max_attempts,
                }
                return {**fields, "payload": validate.not_json_text(payload)}
            return {
                "type": validate.job_type(job.type),
                "payload": validate.payload_json(payload)
                if check_payload
                else validate.not_json_text(payload),
                "queue": validate.job_type(job.queue, what="queue name"),
                "priority": validate.integer(job.priority, "priority"),
                "delay": validate.seconds(job.delay, "delay"),
                "max_attempts": validate.positive_int(job.max_attempts, "max_attempts"),
            }
        except InvalidInputError as exc:
            raise InvalidInputError(f"{exc}{where}") from None

    # -- consuming -------------------------------------------------------------------------

    def claim(
        self,
        conn: Connection,
        worker_id: str,
        *,
        limit: int = 1,
        queues: Sequence[str] | str | None = None,
        lease: float = 300.0,
        per_key: int | None = None,
        fair: bool = False,
    ) -> list[Job]:
        """Claim up to ``limit`` due jobs atomically (``FOR UPDATE SKIP LOCKED``), mark them running.

        Concurrent callers never get the same job. Returns ``[]`` when nothing is due. The jobs
        carry this claim's token (:attr:`Job.token`), a random UUID new for every claim.

        :param worker_id: recorded in the ``worker_id`` column (for people reading the table).
        :param queues: only jobs of these queues (default: every queue).
        :param lease: seconds the claim is held (``locked_until``) before it counts as abandoned
            and :meth:`rescue` may give the job to another worker.
        :param per_key: at most this many running jobs per ``concurrency_key`` (jobs without a
            key are not limited); see :mod:`pgqueue_lab.features.limits`.
        :param fair: take jobs round-robin across concurrency keys (see the same).
        """
        token = uuid4()
        params = {
            "worker_id": validate.job_type(worker_id, what="worker_id"),
            "limit": validate.positive_int(limit, "limit"),
            "queues": validate.queue_names(queues),
            "lease": validate.seconds(lease, "lease"),
            "token": token,
        }
        if per_key is not None or fair:
            rows = _extension(EXTENSIONS.claim, "per_key or fair")(self, conn, params, per_key, fair)
        else:
            with self._tx(conn):
                rows = conn.execute(self._q(sql.CLAIM), params).fetchall()
        return [Job(i, q, t, p, a, m, token) for i, q, t, p, a, m in rows]

    def complete(self, conn: Connection, jobs: Job | Iterable[Job]) -> int:
        """Mark claimed jobs ``completed``. Returns how many changed.

        A job is skipped if it is no longer running under this claim (its lease lapsed and it
        was rescued, or it was already completed): a late run can change nothing.

        :param jobs: the :class:`Job` objects :meth:`claim` returned.
        """
        groups, done = _by_claim(jobs, "complete"), 0
        with self._tx(conn, statements=len(groups)):  # one statement per claim, all or none
            for token, ids in groups.items():
                done += len(conn.execute(self._q(sql.COMPLETE), {"ids": ids, "token": token}).fetchall())
        return done

    def fail(
        self,
        conn: Connection,
        job: Job,
        error: str,
        *,
        retry_delay: float = 1.0,
        max_delay: float = 300.0,
        retry: bool = True,
    ) -> str | None:
        """Record that a claimed job failed.

        With attempts left (and ``retry`` true) it returns to ``pending``, due after
        ``retry_delay * 2^(attempts-1)`` seconds ±10 % (never more than ``max_delay``; see
        :data:`pgqueue_lab.core.sql.FAIL`), and the retry is announced; otherwise it becomes
        ``failed`` (a dead letter). Returns the new status, or ``None`` if nothing changed
        because the job is no longer running under this claim.

        :param error: the error text; a NUL character or a lone surrogate is escaped, and text
            longer than 4000 characters is shortened, so recording it cannot fail.
        """
        ((token, (job_id,)),) = _by_claim(job, "fail").items()
        params = {
            "id": job_id,
            "token": token,
            "error": validate.error_text(error),
            "retry_delay": validate.seconds(retry_delay, "retry_delay"),
            "max_delay": validate.seconds(max_delay, "max_delay"),
            "retry": bool(retry),
            "channel": self.channel,
        }
        with self._tx(conn):
            row = conn.execute(self._q(sql.FAIL), params).fetchone()
        return None if row is None else str(row[0])

    def release(self, conn: Connection, jobs: Iterable[Job]) -> list[int]:
        """Return claimed jobs that were never started to ``pending`` (graceful shutdown).

        The attempt is not counted and the jobs are announced. Returns the ids released; a job
        no longer held under this claim is skipped.
        """
        groups, released = _by_claim(jobs, "release"), []
        with self._tx(conn, statements=len(groups)):
            for token, ids in groups.items():
                params = {"ids": ids, "token": token, "channel": self.channel}
                released += [int(r[0]) for r in conn.execute(self._q(sql.RELEASE), params).fetchall()]
        return sorted(released)

    # -- crashes, dead letters -------------------------------------------------------------

    def heartbeat(self, conn: Connection, jobs: Iterable[Job], lease: float) -> list[int]:
        """Extend the lease of claimed jobs by ``lease`` seconds from now (database clock).

        Returns the ids renewed. A missing id was rescued from this run (its lease expired; it
        must not be started, its result will not be recorded), or its row is locked by another
        transaction right now and was skipped: :meth:`held` tells which.
        """
        lease = validate.seconds(lease, "lease")
        groups, held = _by_claim(jobs, "heartbeat"), []
        with self._tx(conn, statements=len(groups)):
            for token, ids in groups.items():
                params = {"ids": ids, "token": token, "lease": lease}
                held += [int(r[0]) for r in conn.execute(self._q(sql.HEARTBEAT), params).fetchall()]
        return sorted(held)

    def held(self, conn: Connection, jobs: Iterable[Job]) -> list[int]:
        """Ids of ``jobs`` still running under the claim that took them (a plain read: it waits
        for no lock, and renews nothing).

        A heartbeat skips rows another transaction has locked; ask this about the jobs it did
        not return before treating them as rescued.
        """
        groups, held = _by_claim(jobs, "held"), []
        with self._tx(conn, statements=len(groups)):
            for token, ids in groups.items():
                rows = conn.execute(self._q(sql.HELD), {"ids": ids, "token": token}).fetchall()
                held += [int(r[0]) for r in rows]
        return sorted(held)

    def rescue(self, conn: Connection, ids: Iterable[int] | None = None) -> list[tuple[int, str]]:
        """Return jobs whose lease expired to ``pending`` (or ``failed`` if out of attempts).

        Returns ``[(id, new status), ...]``. Safe to run from every worker at any time.

        :param ids: rescue only these jobs (if their lease expired); default: every such job.
        """
        only = None if ids is None else [validate.integer(i, "job id", bits=64) for i in ids]
        with self._tx(conn):
            rows = conn.execute(self._q(sql.RESCUE), {"channel": self.channel, "ids": only}).fetchall()
        return [(int(i), str(s)) for i, s in rows]

    def expired(self, conn: Connection) -> list[int]:
        """Ids of running jobs whose lease expired (what :meth:`rescue` would take), in order."""
        with self._tx(conn):
            return [int(r[0]) for r in conn.execute(self._q(sql.EXPIRED)).fetchall()]

    def dead_letters(self, conn: Connection) -> list[dict[str, Any]]:
        """Jobs that used up their attempts (status ``failed``), with their error history."""
        return self._dicts(conn, sql.DEAD_LETTERS)

    def requeue(self, conn: Connection, job_ids: int | Iterable[int]) -> list[int]:
        """Give failed jobs a fresh set of attempts; returns the ids requeued (others are skipped).

        A failed job whose ``unique_key`` is now held by a pending or running job (or by a lower
        id of the same call) is skipped and stays failed; a warning names them. The rest are
        requeued.
        """
        ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
        if not ids:
            return []
        for job_id in ids:
            validate.integer(job_id, "job id", bits=64)
        params = {"ids": ids, "channel": self.channel}
        try:
            with self._tx(conn):
                return [int(r[0]) for r in conn.execute(self._q(sql.REQUEUE), params).fetchall()]
        except psycopg.errors.UniqueViolation:  # a job's unique_key is held: skip such jobs
            pass
        for attempt in range(REQUEUE_RETRIES + 1):
            try:
                with self._tx(conn):
                    rows = conn.execute(self._q(sql.REQUEUE_SKIP_HELD), params).fetchall()
                break
            except psycopg.errors.UniqueViolation:  # a key taken after the statement began
                if attempt == REQUEUE_RETRIES:
                    raise
        held = [int(i) for i, requeued in rows if not requeued]
        if held:
            _log.warning("jobs %s not requeued: their unique_key is held by a live job", held)
        return [int(i) for i, requeued in rows if requeued]

    def next_due(
        self, conn: Connection, queues: Sequence[str] | str | None = None, *, future_only: bool = False
    ) -> float | None:
        """Seconds until the next pending job is due (0 if one is due now, ``None`` if none pends).

        With ``future_only``, only jobs not due yet count (see :data:`pgqueue_lab.core.sql.NEXT_DUE`).
        """
        params = {"queues": validate.queue_names(queues), "future_only": bool(future_only)}
        with self._tx(conn):
            row = conn.execute(self._q(sql.NEXT_DUE), params).fetchone()
        return None if row is None or row[0] is None else max(0.0, float(row[0]))

    def vacuum(self, conn: Connection) -> None:
        """Run ``VACUUM`` on the jobs table (see :data:`pgqueue_lab.core.sql.VACUUM_JOBS`).

        :raises InvalidInputError: ``conn`` is not in autocommit mode or is inside a transaction
            (VACUUM cannot run in one).
        """
        _require_autocommit(conn, "vacuum")
        with self._tx(conn):
            conn.execute(self._q(sql.VACUUM_JOBS))

    def has_work(self, conn: Connection, queues: Sequence[str] | str | None = None) -> bool:
        """Whether any job is pending or running."""
        with self._tx(conn):
            row = conn.execute(self._q(sql.HAS_WORK), {"queues": validate.queue_names(queues)}).fetchone()
        return bool(row and row[0])

    # -- waiting ---------------------------------------------------------------------------

    def listen(self, conn: Connection) -> None:
        """Subscribe ``conn`` to this queue's channel.

        :raises InvalidInputError: ``conn`` is not in autocommit mode or is inside a transaction:
            a session receives notifications only between transactions.
        """
        _require_autocommit(conn, "listen")
        conn.execute(sql.compose(sql.LISTEN, self.schema, channel=self.channel))

    def wait(self, conn: Connection, timeout: float) -> list[str]:
        """Wait up to ``timeout`` seconds for a new-job notification on a listening connection.

        Returns the payloads (queue names) received, ``[]`` on timeout. A notification can be
        lost (a dropped connection loses them silently), so always claim after a timeout too.
        """
        timeout = validate.seconds(timeout, "timeout")
        return [n.payload for n in conn.notifies(timeout=timeout, stop_after=1)]

    # -- looking ---------------------------------------------------------------------------

    def status_counts(self, conn: Connection) -> list[tuple[str, int]]:
        """``[(status, number of jobs), ...]`` for every status, in lifecycle order."""
        with self._tx(conn):
            rows = conn.execute(self._q(sql.STATUS_COUNTS), {"statuses": list(sql.STATUSES)}).fetchall()
        return [(str(s), int(n)) for s, n in rows]

    def jobs(self, conn: Connection) -> list[dict[str, Any]]:
        """Every job as a dict, ordered by id."""
        return self._dicts(conn, sql.LIST_JOBS)

    def _dicts(self, conn: Connection, statement: str) -> list[dict[str, Any]]:
        with self._tx(conn):
            cur = conn.execute(self._q(statement))
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _require_autocommit(conn: Connection, what: str) -> None:
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise InvalidInputError(
            f"{what}() needs an autocommit connection outside any transaction "
            "(pgqueue_lab.connect() gives one; or psycopg.connect(..., autocommit=True))"
        )
