"""Is the queue healthy? One report of what slows a PostgreSQL queue down before it fails.

:func:`check` asks the database for four figures and compares them with :class:`Thresholds`:

- the **oldest open snapshot** of a client session in this database
  (``pg_stat_activity.backend_xmin`` or ``backend_xid``): its age in transaction ids assigned
  since (``age()``; not time: a quiet server ages slowly) and how long its transaction has been
  open. While it stays open, vacuum cannot remove a row version deleted by a transaction that
  was still running when it began, or by a later one, so every claim steps over more dead
  entries (notebook 15). Prepared transactions and standbys with ``hot_standby_feedback``
  (through their replication slot's ``xmin``, even while they are disconnected) hold vacuum
  back too; they are not in this report;
- **dead rows** of the jobs table (``pg_stat_user_tables.n_dead_tup``, which the statistics
  system updates with a delay: a second or so while the writer is busy, up to about 10 s
  after it goes idle);
- **pending** jobs, and how long the due job that waited longest has been due.

Each figure past its threshold becomes one warning line. The live view (``pgqueue-lab watch``)
shows the report under its frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core import sql, validate
from ..core.queue import Connection, Queue
from ..errors import InvalidInputError

# -- statements (print one: ``print(health.WATCH_DEAD_ROWS)``) -----------------------------------

#: Live and dead rows of the jobs table, as the statistics system last counted them (it lags:
#: a second or so behind a busy writer, up to about 10 s behind one that went idle), and seconds
#: since it was last vacuumed (by hand or autovacuum).
WATCH_DEAD_ROWS = """\
SELECT n_live_tup, n_dead_tup,
       extract(epoch FROM now() - greatest(last_vacuum, last_autovacuum))::float8 AS vacuumed_ago
FROM pg_stat_user_tables
WHERE schemaname = %(schema)s AND relname = 'jobs'"""

#: The client session of this database whose open transaction holds back vacuum the longest:
#: the older of its snapshot (``backend_xmin``: REPEATABLE READ, SERIALIZABLE, a running
#: statement, an open cursor) and its own transaction id (``backend_xid``: it wrote or locked a
#: row), by ``age()`` (transaction ids assigned since, not time), with how long its transaction
#: has been open and its state. Row versions deleted by a transaction still running at that
#: point, or by a later one, cannot be removed by vacuum while it stays open. Only client
#: backends: an autovacuum worker's ``backend_xmin`` holds back nothing while it vacuums (but
#: does while it analyses, usually briefly); a manual VACUUM, which holds nothing back either,
#: is a client backend and is still listed. Not
#: counted here, though they hold back the horizon too: prepared transactions
#: (``pg_prepared_xacts``), replication slots (``pg_replication_slots.xmin``), standbys with
#: ``hot_standby_feedback`` (their walsender has no database), and background workers.
HEALTH_OLDEST_SNAPSHOT = """\
SELECT pid, application_name, state,
       greatest(age(backend_xmin), age(backend_xid)) AS xmin_age,
       extract(epoch FROM now() - xact_start)::float8 AS open_for
FROM pg_stat_activity
WHERE datname = current_database()
  AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
  AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
ORDER BY greatest(age(backend_xmin), age(backend_xid)) DESC, xact_start, pid
LIMIT 1"""

#: Pending jobs, and how long the due job that has waited longest has been due (seconds since
#: its ``run_at``; NULL if none is due). A job scheduled for later is not late.
HEALTH_BACKLOG = """\
SELECT count(*) AS pending,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest_due
FROM {schema}.jobs
WHERE status = 'pending'"""


#: What ends a transaction that holds back vacuum, by its state: a timeout for one left idle
#: inside its transaction, and one for a statement (or transaction) that runs too long, which
#: ``idle_in_transaction_session_timeout`` never ends (``transaction_timeout``: PostgreSQL 17+).
IDLE_CURE = "idle_in_transaction_session_timeout"
ACTIVE_CURE = "statement_timeout (or, on PostgreSQL 17+, transaction_timeout)"


@dataclass(frozen=True)
class Thresholds:
    """Where a figure of :class:`Health` becomes a warning.

    :param snapshot_seconds: a transaction holding a snapshot (or a transaction id) open longer
        than this holds back vacuum for too long. ``idle_in_transaction_session_timeout`` should
        end a forgotten one before it gets here.
    :param snapshot_xids: ... or one older than this many transactions.
    :param dead_rows: dead rows of the jobs table.
    :param pending: pending jobs (due or not).
    :param due_seconds: seconds the longest-waiting due job has waited since it fell due.
    """

    snapshot_seconds: float = 60.0
    snapshot_xids: int = 100_000
    dead_rows: int = 50_000
    pending: int = 100_000
    due_seconds: float = 300.0

    def __post_init__(self) -> None:
        for name in ("snapshot_seconds", "due_seconds"):
            validate.seconds(getattr(self, name), name)
        for name in ("snapshot_xids", "dead_rows", "pending"):
            validate.positive_int(getattr(self, name), name)


@dataclass(frozen=True)
class OpenSnapshot:
    """The session whose open transaction holds back vacuum the longest."""

    pid: int
    application_name: str
    state: str | None
    xids: int  # its age in transactions
    seconds: float | None  # how long its transaction has been open


@dataclass(frozen=True)
class Health:
    """One health report of a queue (see :func:`check`)."""

    schema: str
    oldest_snapshot: OpenSnapshot | None
    dead_rows: int | None  # None: the statistics system has not seen the table yet
    live_rows: int | None
    pending: int
    oldest_due: float | None  # seconds; None: no job is due
    thresholds: Thresholds = field(default_factory=Thresholds)

    @property
    def warnings(self) -> list[str]:
        """One line per figure past its threshold (empty: healthy)."""
        t, found = self.thresholds, []
        s = self.oldest_snapshot
        if s is not None and (
            s.xids > t.snapshot_xids or (s.seconds is not None and s.seconds > t.snapshot_seconds)
        ):
            opened = "?" if s.seconds is None else f"{s.seconds:.0f} s"
            idle = (s.state or "").startswith("idle in transaction")  # else a statement runs
            found.append(
                f"a transaction open for {opened} ({s.xids} transactions old; pid {s.pid} "
                f"{s.application_name or '-'}, {s.state or '?'}) holds back vacuum: end it, or set "
                + (IDLE_CURE if idle else ACTIVE_CURE)
            )
        if self.dead_rows is not None and self.dead_rows > t.dead_rows:
            found.append(f"{self.dead_rows} dead rows in the jobs table: is vacuum held back or too rare?")
        if self.pending > t.pending:
            found.append(f"{self.pending} jobs pending: the workers do not keep up")
        if self.oldest_due is not None and self.oldest_due > t.due_seconds:
            found.append(f"a due job has waited {self.oldest_due:.0f} s: the workers do not keep up")
        return found

    @property
    def ok(self) -> bool:
        """No warning."""
        return not self.warnings

    def lines(self) -> list[str]:
        """The report as text lines (figures, then warnings): what ``pgqueue-lab watch`` shows."""
        s = self.oldest_snapshot
        if s is None:
            snapshot = "oldest open snapshot: none"
        else:
            opened = "?" if s.seconds is None else f"{s.seconds:.1f} s"
            snapshot = f"oldest open snapshot: {s.xids} transactions, open {opened} (pid {s.pid}, {s.state})"
        due = "none due" if self.oldest_due is None else f"oldest due for {self.oldest_due:.1f} s"
        dead = "?" if self.dead_rows is None else str(self.dead_rows)
        figures = [snapshot, f"dead rows: {dead} · pending: {self.pending} ({due})"]
        return figures + ([f"WARNING: {w}" for w in self.warnings] or ["health: ok"])


def check(conn: Connection, queue: Queue | str, thresholds: Thresholds | None = None) -> Health:
    """Take one health report of ``queue`` (three short reads, no locks taken).

    :param thresholds: where figures become warnings (default :class:`Thresholds`).
    :raises QueueNotFoundError: the queue does not exist.
    :raises InvalidInputError: ``thresholds`` is not a :class:`Thresholds`.
    """
    queue = queue if isinstance(queue, Queue) else Queue(queue)
    if thresholds is None:
        thresholds = Thresholds()
    elif not isinstance(thresholds, Thresholds):
        raise InvalidInputError(f"thresholds must be a Thresholds, got {type(thresholds).__name__}")
    with queue._tx(conn):  # a missing queue becomes QueueNotFoundError
        backlog = conn.execute(sql.compose(HEALTH_BACKLOG, queue.schema)).fetchone()
        oldest = conn.execute(HEALTH_OLDEST_SNAPSHOT).fetchone()
        rows = conn.execute(WATCH_DEAD_ROWS, {"schema": queue.schema}).fetchone()
    assert backlog is not None
    snapshot = None
    if oldest is not None:
        pid, app, state, xids, seconds = oldest
        snapshot = OpenSnapshot(
            int(pid), str(app or ""), state, int(xids or 0), None if seconds is None else float(seconds)
        )
    return Health(
        schema=queue.schema,
        oldest_snapshot=snapshot,
        dead_rows=None if rows is None else int(rows[1]),
        live_rows=None if rows is None else int(rows[0]),
        pending=int(backlog[0]),
        oldest_due=None if backlog[1] is None else max(0.0, float(backlog[1])),
        thresholds=thresholds,
    )
