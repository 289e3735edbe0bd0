"""Finished jobs leave the hot table: archive them, delete them, or drop old periods whole.

Completed jobs stay in ``jobs`` forever unless something moves them, and every claim then works
next to them: the table and its indexes grow, VACUUM has more to read, and peers report fetches
slowing at millions of rows. Three strategies (compared in notebook 16):

- **delete on completion** (:func:`complete_deleting`): nothing to clean up, nothing to look at;
- **archive** (:func:`archive`): one statement moves finished jobs older than ``keep`` seconds
  to ``jobs_archive`` (``DELETE ... RETURNING`` feeding an ``INSERT``), so a reader that looks
  at both tables under one snapshot (one statement, or one REPEATABLE READ transaction) finds a
  job in exactly one of them; two READ COMMITTED statements may see it in both or in neither.
  :func:`prune` deletes them instead;
- **partitions** (:func:`create_archive` with ``period=``): the archive is partitioned by
  ``finished_at``, and :func:`prune_archive` drops a period whose rows are all old enough with
  one ``DROP TABLE``, instead of deleting row by row.

:class:`Retention` is the setting a :class:`~pgqueue_lab.core.worker.Worker` takes
(``Worker(..., retention=Retention(keep=3600))``): its housekeeper then calls :func:`run` every
``Retention.every`` seconds. Runs of one queue take turns (an advisory lock), so many workers
may all have the setting. Only finished jobs are ever touched (``completed`` by default; dead
letters, ``failed``, only if asked), and a row another transaction holds is left for next time.

Reports keep working: :func:`pgqueue_lab.tools.report.jobs_frame` and ``status_frame`` read the
archive too when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ..core import sql, validate
from ..core.queue import Connection, Job, Queue, _by_claim
from ..core.worker import Extension, Worker
from ..errors import InvalidInputError

# -- statements (print one: ``print(retention.CREATE_ARCHIVE)``) ---------------------------------

#: The archive: the jobs table's columns (``LIKE`` copies names, types and NOT NULL, not the
#: identity, defaults or checks), plus when each row was archived. Plain, keyed by ``id``.
CREATE_ARCHIVE = """\
CREATE TABLE IF NOT EXISTS {schema}.jobs_archive (
    LIKE {schema}.jobs,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
)"""

#: The archive partitioned by ``finished_at`` (one partition per period, made by
#: :func:`pgqueue_lab.features.retention.archive` as needed): an old period leaves with ``DROP TABLE``,
#: no row by row ``DELETE``, no dead rows. A primary key of a partitioned table must include the
#: partition key.
CREATE_ARCHIVE_PARTITIONED = """\
CREATE TABLE IF NOT EXISTS {schema}.jobs_archive (
    LIKE {schema}.jobs,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, finished_at)
) PARTITION BY RANGE (finished_at)"""

#: One partition of the archive: rows finished from ``start`` (included) to ``end`` (excluded).
CREATE_ARCHIVE_PARTITION = """\
CREATE TABLE IF NOT EXISTS {schema}.{partition}
    PARTITION OF {schema}.jobs_archive FOR VALUES FROM ({start}) TO ({end})"""

#: A partitioned archive remembers its period (seconds) in its comment.
ARCHIVE_COMMENT = "COMMENT ON TABLE {schema}.jobs_archive IS {comment}"

#: Does the archive exist, is it partitioned, and its comment? (No row: no archive.)
ARCHIVE_KIND = """\
SELECT c.relkind = 'p', obj_description(c.oid, 'pg_class')
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = 'jobs_archive'"""

#: Retention runs of one queue take turns (two workers' housekeepers, say): a transaction-level
#: advisory lock on the queue's name, released at commit or rollback.
RETENTION_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))"

#: The periods (start times, as seconds since the epoch) of the finished jobs the next
#: ARCHIVE would take: the partitions it needs.
ARCHIVE_PERIODS = """\
SELECT DISTINCT floor(extract(epoch FROM finished_at) / %(period)s)::bigint * %(period)s
FROM {schema}.jobs
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
ORDER BY 1"""

#: Move finished jobs (finished more than ``older_than`` seconds ago) from ``jobs`` to
#: ``jobs_archive`` in one statement, so any one snapshot sees each job in exactly one of them
#: (two READ COMMITTED statements, a snapshot each, may see it in both or in neither).
#: ``FOR UPDATE SKIP LOCKED`` leaves alone a row another transaction holds (a ``requeue`` of a
#: dead letter, say); a row changed meanwhile is checked again (the status condition is
#: repeated in the DELETE), so nothing that stopped being finished is moved. The rows are
#: chosen in a ``MATERIALIZED`` CTE, run exactly once: written as ``WHERE id IN (SELECT ...
#: LIMIT n FOR UPDATE SKIP LOCKED)``, the planner may run the subquery again for each row and
#: take more than ``n`` rows (the tests caught it doing so).
ARCHIVE = """\
WITH doomed AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE status = ANY(%(statuses)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
    ORDER BY finished_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM {schema}.jobs AS j
    USING doomed
    WHERE j.id = doomed.id AND j.status = ANY(%(statuses)s::text[])
    RETURNING j.*
)
INSERT INTO {schema}.jobs_archive (
    id, queue, type, payload, status, priority, run_at, attempts, max_attempts, last_error,
    errors, worker_id, claim_token, locked_until, created_at, started_at, finished_at)
SELECT id, queue, type, payload, status, priority, run_at, attempts, max_attempts, last_error,
       errors, worker_id, claim_token, locked_until, created_at, started_at, finished_at
FROM moved
RETURNING id"""

#: Delete finished jobs (finished more than ``older_than`` seconds ago) without keeping them.
PRUNE = """\
WITH doomed AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE status = ANY(%(statuses)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
    ORDER BY finished_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.jobs AS j
USING doomed
WHERE j.id = doomed.id AND j.status = ANY(%(statuses)s::text[])
RETURNING j.id"""

#: Delete on completion: a claimed job that succeeded is deleted instead of being marked
#: ``completed`` (fenced by the claim token, like COMPLETE). Nothing is left to clean up, and
#: nothing is left to look at either.
COMPLETE_DELETING = """\
DELETE FROM {schema}.jobs
WHERE id = ANY(%(ids)s) AND status = 'running' AND claim_token = %(token)s
RETURNING id"""

#: Delete archived rows finished more than ``older_than`` seconds ago (a plain archive).
PRUNE_ARCHIVE = """\
DELETE FROM {schema}.jobs_archive
WHERE finished_at < now() - make_interval(secs => %(older_than)s)
RETURNING id"""

#: The partitions of the archive with their bounds, oldest first, and whether every row they
#: may hold finished more than ``older_than`` seconds ago (so the partition may be dropped).
ARCHIVE_PARTITIONS = """\
SELECT c.relname, b.bounds[1]::timestamptz AS starts, b.bounds[2]::timestamptz AS ends,
       b.bounds[2]::timestamptz <= now() - make_interval(secs => %(older_than)s) AS expired
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS b(bounds)
WHERE i.inhparent = (SELECT c2.oid FROM pg_class AS c2
                     JOIN pg_namespace AS n ON n.oid = c2.relnamespace
                     WHERE n.nspname = %(schema)s AND c2.relname = 'jobs_archive')
ORDER BY starts"""

#: Rows in one partition (counted before it is dropped).
COUNT_PARTITION = "SELECT count(*) FROM {schema}.{partition}"

#: A partition whose period is over leaves whole: no dead rows, no VACUUM. It takes an ACCESS
#: EXCLUSIVE lock on the archive (the parent) until the transaction ends: the request waits
#: behind running queries of the archive, and new ones wait behind it (notebook 16).
DROP_ARCHIVE_PARTITION = "DROP TABLE IF EXISTS {schema}.{partition}"

#: Every job, live or archived, oldest first: what reports read once finished jobs move out.
LIST_JOBS_WITH_ARCHIVE = """\
SELECT id, queue, type, payload, status, priority, attempts, max_attempts, last_error,
       worker_id, created_at, started_at, finished_at
FROM {schema}.jobs
UNION ALL
SELECT id, queue, type, payload, status, priority, attempts, max_attempts, last_error,
       worker_id, created_at, started_at, finished_at
FROM {schema}.jobs_archive
ORDER BY id"""

#: Jobs per status, live and archived together (every state listed, zero included).
STATUS_COUNTS_WITH_ARCHIVE = """\
SELECT s.status, count(j.id) AS jobs
FROM unnest(%(statuses)s::text[]) WITH ORDINALITY AS s(status, n)
LEFT JOIN (SELECT id, status FROM {schema}.jobs
           UNION ALL
           SELECT id, status FROM {schema}.jobs_archive) AS j ON j.status = s.status
GROUP BY s.status, s.n
ORDER BY s.n"""

#: The states a job stays in once it is finished.
FINISHED = ("completed", "failed")
#: The most rows one statement moves or deletes (a long statement holds its locks longer).
DEFAULT_BATCH = 5000


@dataclass(frozen=True)
class Retention:
    """How long finished jobs stay in ``jobs``, and what happens to them then.

    :param keep: seconds after ``finished_at`` a finished job stays in ``jobs`` (for dashboards,
        reports, de-duplication by a recent job...).
    :param action: ``"archive"`` (move to ``jobs_archive``) or ``"delete"``.
    :param statuses: which finished states leave: ``("completed",)`` by default, so dead letters
        stay where ``requeue`` finds them; add ``"failed"`` to move them too.
    :param keep_archive: seconds archived jobs are kept (``None``: forever). A partitioned
        archive drops whole periods whose rows are all older than this.
    :param every: seconds between two runs of a worker's housekeeper.
    :param batch: the most rows one statement moves; a run repeats until less are left.
    :raises InvalidInputError: a value is unusable.
    """

    keep: float = 3600.0
    action: str = "archive"
    statuses: tuple[str, ...] = ("completed",)
    keep_archive: float | None = None
    every: float = 60.0
    batch: int = DEFAULT_BATCH

    def __post_init__(self) -> None:
        validate.seconds(self.keep, "keep")
        validate.seconds(self.every, "every")
        validate.positive_int(self.batch, "batch")
        if self.keep_archive is not None:
            validate.seconds(self.keep_archive, "keep_archive")
        if self.action not in ("archive", "delete"):
            raise InvalidInputError(f"action must be 'archive' or 'delete', got {self.action!r}")
        object.__setattr__(self, "statuses", _statuses(self.statuses))

    def extension(self, worker: Worker) -> Schedule:
        """What ``Worker(retention=self)`` runs: a :class:`Schedule` in its housekeeper."""
        return Schedule(worker, self)


def _statuses(statuses: Iterable[str] | str) -> tuple[str, ...]:
    items = (statuses,) if isinstance(statuses, str) else tuple(statuses)
    wrong = [s for s in items if s not in FINISHED]
    if not items or wrong:
        raise InvalidInputError(
            f"statuses must be finished states ({', '.join(FINISHED)}), got {list(items)!r}: "
            "a job that is pending or running is never archived or deleted"
        )
    return tuple(dict.fromkeys(items))


def _lock(conn: Connection, queue: Queue) -> None:
    conn.execute(RETENTION_LOCK, {"key": f"pgqueue_lab.features.retention:{queue.schema}"})


def archive_kind(conn: Connection, queue: Queue) -> str | None:
    """``"plain"``, ``"partitioned"``, or ``None`` if the queue has no archive."""
    row = conn.execute(ARCHIVE_KIND, {"schema": queue.schema}).fetchone()
    return None if row is None else ("partitioned" if row[0] else "plain")


def create_archive(conn: Connection, queue: Queue, *, period: float | None = None) -> None:
    """Create ``jobs_archive`` next to the queue's ``jobs`` (idempotent).

    :param period: partition the archive by ``finished_at``, one partition per ``period``
        seconds (86400: a day); the partitions are made as :func:`archive` needs them. An
        existing archive is kept as it is.
    :raises QueueNotFoundError: the queue does not exist.
    """
    statement = CREATE_ARCHIVE if period is None else CREATE_ARCHIVE_PARTITIONED
    if period is not None and validate.seconds(period, "period") < 1:
        raise InvalidInputError(f"period must be at least 1 second, got {period}")
    with queue._tx(conn, statements=2):
        _lock(conn, queue)
        conn.execute(sql.compose(statement, queue.schema))
        if period is not None and _period(conn, queue) is None:
            comment = f"pgqueue_lab archive, period {int(period)} s"
            conn.execute(
                sql.compose_utility(ARCHIVE_COMMENT, schema=queue.schema, literals={"comment": comment})
            )


def _period(conn: Connection, queue: Queue) -> int | None:
    """The period (seconds) of a partitioned archive, from its comment (``None``: not set)."""
    row = conn.execute(ARCHIVE_KIND, {"schema": queue.schema}).fetchone()
    text = "" if row is None or row[1] is None else str(row[1])
    return int(text.rsplit("period ", 1)[1].split()[0]) if "period " in text else None


def _partition_name(start: datetime) -> str:
    return f"jobs_archive_{start:%Y%m%d_%H%M%S}"


def _ensure_partitions(conn: Connection, queue: Queue, params: dict[str, object]) -> None:
    period = _period(conn, queue) or 86400
    rows = conn.execute(sql.compose(ARCHIVE_PERIODS, queue.schema), {**params, "period": period}).fetchall()
    for (epoch,) in rows:
        start = datetime.fromtimestamp(int(epoch), UTC)
        statement = sql.compose_utility(
            CREATE_ARCHIVE_PARTITION,
            schema=queue.schema,
            partition=_partition_name(start),
            literals={"start": start, "end": start + timedelta(seconds=period)},
        )
        conn.execute(statement)


def _params(older_than: float, statuses: Iterable[str] | str, limit: int) -> dict[str, object]:
    return {
        "older_than": validate.seconds(older_than, "older_than"),
        "statuses": list(_statuses(statuses)),
        "limit": validate.positive_int(limit, "limit"),
    }


def archive(
    conn: Connection,
    queue: Queue,
    *,
    older_than: float = 0.0,
    statuses: Sequence[str] | str = ("completed",),
    limit: int = DEFAULT_BATCH,
) -> int:
    """Move up to ``limit`` finished jobs, finished more than ``older_than`` seconds ago (oldest
    first), from ``jobs`` to ``jobs_archive``, in one transaction. Returns how many moved.

    Creates a plain archive if the queue has none. A partitioned archive gets the partitions
    the moved jobs need first, in the same transaction.

    :raises InvalidInputError: before anything is sent, if ``statuses`` names an unfinished
        state or a number is unusable.
    :raises QueueNotFoundError: the queue does not exist.
    """
    params = _params(older_than, statuses, limit)
    with queue._tx(conn, statements=3):
        _lock(conn, queue)
        kind = archive_kind(conn, queue)
        if kind is None:
            conn.execute(sql.compose(CREATE_ARCHIVE, queue.schema))
        elif kind == "partitioned":
            _ensure_partitions(conn, queue, params)
        return len(conn.execute(sql.compose(ARCHIVE, queue.schema), params).fetchall())


def prune(
    conn: Connection,
    queue: Queue,
    *,
    older_than: float = 0.0,
    statuses: Sequence[str] | str = ("completed",),
    limit: int = DEFAULT_BATCH,
) -> int:
    """Delete up to ``limit`` finished jobs finished more than ``older_than`` seconds ago, without
    keeping them. Returns how many were deleted.

    :raises InvalidInputError: as :func:`archive`.
    """
    params = _params(older_than, statuses, limit)
    with queue._tx(conn, statements=2):
        _lock(conn, queue)
        return len(conn.execute(sql.compose(PRUNE, queue.schema), params).fetchall())


def prune_archive(conn: Connection, queue: Queue, *, older_than: float) -> int:
    """Forget archived jobs finished more than ``older_than`` seconds ago. Returns how many.

    A plain archive deletes them row by row. A partitioned one drops every partition whose
    whole period ended more than ``older_than`` seconds ago (a younger partition waits, even if
    some of its rows are old enough), after counting its rows, all in one transaction: each
    ``DROP TABLE`` takes an ACCESS EXCLUSIVE lock on the archive, held until that transaction
    commits (queries of the archive wait meanwhile, and the drop waits for running ones). No
    archive: 0.
    """
    older = validate.seconds(older_than, "older_than")
    with queue._tx(conn, statements=2):
        _lock(conn, queue)
        kind = archive_kind(conn, queue)
        if kind is None:
            return 0
        if kind == "plain":
            return len(
                conn.execute(sql.compose(PRUNE_ARCHIVE, queue.schema), {"older_than": older}).fetchall()
            )
        gone = 0
        for name, *_, expired in partitions(conn, queue, older_than=older):
            if expired:
                count = conn.execute(sql.compose(COUNT_PARTITION, queue.schema, partition=name)).fetchone()
                gone += int(count[0]) if count else 0
                conn.execute(sql.compose(DROP_ARCHIVE_PARTITION, queue.schema, partition=name))
        return gone


def partitions(
    conn: Connection, queue: Queue, *, older_than: float = 0.0
) -> list[tuple[str, datetime, datetime, bool]]:
    """The archive's partitions, oldest first: ``(name, start, end, expired)``, where
    ``expired`` says the whole period ended more than ``older_than`` seconds ago."""
    params = {"schema": queue.schema, "older_than": validate.seconds(older_than, "older_than")}
    return [(str(n), s, e, bool(x)) for n, s, e, x in conn.execute(ARCHIVE_PARTITIONS, params).fetchall()]


def complete_deleting(conn: Connection, queue: Queue, jobs: Job | Iterable[Job]) -> int:
    """Delete on completion: delete claimed jobs that succeeded instead of marking them
    ``completed`` (fenced by their claim token, like :meth:`Queue.complete`). Returns how many.
    """
    groups, done = _by_claim(jobs, "complete_deleting"), 0
    with queue._tx(conn, statements=len(groups)):
        for token, ids in groups.items():
            rows = conn.execute(sql.compose(COMPLETE_DELETING, queue.schema), {"ids": ids, "token": token})
            done += len(rows.fetchall())
    return done


def run(conn: Connection, queue: Queue, retention: Retention) -> tuple[int, int]:
    """One pass of ``retention``: move (or delete) finished jobs older than ``keep``, a batch per
    transaction until a batch comes back short, then forget archived jobs older than
    ``keep_archive``. Returns ``(jobs moved or deleted, archived jobs forgotten)``.
    """
    if not isinstance(retention, Retention):
        raise InvalidInputError(f"retention must be a Retention, got {type(retention).__name__}")
    step = archive if retention.action == "archive" else prune
    moved = 0
    while True:
        n = step(conn, queue, older_than=retention.keep, statuses=retention.statuses, limit=retention.batch)
        moved += n
        if n < retention.batch:
            break
    forgotten = 0
    if retention.keep_archive is not None:
        forgotten = prune_archive(conn, queue, older_than=retention.keep_archive)
    return moved, forgotten


class Schedule(Extension):
    """Runs :func:`run` at most every ``retention.every`` seconds (a worker's housekeeper calls
    :meth:`step` on each of its rounds, as its :meth:`housekeeping`). The first call runs at
    once. ``Worker(retention=...)`` makes one (:meth:`Retention.extension`), as
    ``worker.retention``."""

    def __init__(self, worker: Worker, retention: Retention) -> None:
        if not isinstance(retention, Retention):
            raise InvalidInputError(f"retention must be a Retention, got {type(retention).__name__}")
        super().__init__(worker)
        self.queue, self.retention = worker.queue, retention
        self.last: float | None = None
        self.moved = 0
        self.forgotten = 0

    def step(self, conn: Connection) -> bool:
        """Run a pass if one is due; returns whether it ran."""
        now = time.monotonic()
        if self.last is not None and now - self.last < self.retention.every:
            return False
        self.last = now
        moved, forgotten = run(conn, self.queue, self.retention)
        self.moved += moved
        self.forgotten += forgotten
        return True

    def housekeeping(self, conn: Connection) -> None:
        self.step(conn)
