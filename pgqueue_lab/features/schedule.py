"""Periodic jobs: schedules stored in the database, ticked by any number of schedulers.

``add(queue, conn, "nightly-report", "report", cron="0 2 * * *")`` (or ``every=300`` seconds)
stores a schedule in the queue's ``schedules`` table. A scheduler (:func:`tick`, called by
:func:`run` once a second, or by a :class:`~pgqueue_lab.core.worker.Worker` started with
``schedules=True``) reads every schedule with the database's clock, works out each one's
due ticks not yet enqueued, and enqueues each, oldest first, with
:data:`SCHEDULE_FIRE`: an UPDATE that moves the schedule's ``last_tick``
forward only if it is behind this tick, and an INSERT of the job in the same statement. Any
number of schedulers may run at once (one per worker, say): the row lock makes the second wait
for the first, re-read the row and find the tick taken, so **each tick enqueues exactly one
job**. The job also carries the tick's unique key
(``schedule:<name>@<tick>``; see :mod:`pgqueue_lab.features.unique`).

- Cron expressions (five fields: ticks fall on whole minutes) are parsed by `cronsim
  <https://pypi.org/project/cronsim/>`_ (the parser of Healthchecks.io: small, no dependencies,
  maintained), in UTC. Intervals tick at whole multiples of ``every`` seconds since the Unix
  epoch, so every scheduler computes the same ticks.
- :func:`run` wakes just after each whole multiple of its ``interval`` (each second), not an
  interval after its last tick ended, so it does not drift past ticks.
- A tick before the schedule was created never fires. **Missed ticks are caught up, at most
  :data:`CATCH_UP` (3) of them**: a scheduler that was slow (a tick call longer than a
  second, a busy machine) or paused enqueues the due ticks since the schedule's ``last_tick``,
  oldest first, but only the latest three; older ones are skipped. After an hour with no
  scheduler, an ``every=60`` schedule gets the last three minutes' ticks, not sixty.

Peers: River's periodic jobs (``PeriodicJob``, run by the elected leader), Oban's ``Cron``
plugin, pg-boss's ``schedule`` (cron, exactly once per tick), graphile-worker's crontab,
procrastinate's ``periodic``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cronsim import CronSim, CronSimError

from ..core import validate
from ..core.holdings import CONNECTION_ERRORS
from ..core.queue import Connection, Queue
from ..core.worker import Extension, Worker
from ..errors import InvalidInputError

# -- statements (print one: ``print(schedule.CREATE_SCHEDULES_TABLE)``) --------------------------

#: Periodic jobs: a cron expression or an interval in seconds (exactly one), and the last tick
#: that enqueued a job. A tick is enqueued by whichever scheduler moves ``last_tick`` forward.
CREATE_SCHEDULES_TABLE = """\
CREATE TABLE IF NOT EXISTS {schema}.schedules (
    name       text        PRIMARY KEY CHECK (name <> ''),
    type       text        NOT NULL CHECK (type <> ''),
    payload    jsonb       NOT NULL DEFAULT jsonb_build_object(),
    queue      text        NOT NULL DEFAULT 'default' CHECK (queue <> ''),
    cron       text,
    every      float8      CHECK (every > 0),
    last_tick  timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every IS NULL))
)"""

#: Add a schedule, or change one (its ``last_tick`` is kept, so a change never repeats a tick).
SCHEDULE_UPSERT = """\
INSERT INTO {schema}.schedules (name, type, payload, queue, cron, every)
VALUES (%(name)s, %(type)s, %(payload)s::jsonb, %(queue)s, %(cron)s, %(every)s)
ON CONFLICT (name) DO UPDATE
SET type = EXCLUDED.type, payload = EXCLUDED.payload, queue = EXCLUDED.queue,
    cron = EXCLUDED.cron, every = EXCLUDED.every
RETURNING name"""

SCHEDULE_DELETE = "DELETE FROM {schema}.schedules WHERE name = %(name)s RETURNING name"

#: Every schedule, with the database clock's time (every scheduler decides on the same clock).
SCHEDULES = """\
SELECT name, type, payload, queue, cron, every, last_tick, created_at, now() AS db_now
FROM {schema}.schedules
ORDER BY name"""

#: Enqueue one tick of one schedule, exactly once however many schedulers try: the UPDATE moves
#: ``last_tick`` forward only if it is behind this tick (a second scheduler waits for the first's
#: row lock, re-reads the row, and finds it moved); the job also gets the tick's unique key.
SCHEDULE_FIRE = """\
WITH advanced AS (
    UPDATE {schema}.schedules
    SET last_tick = %(tick)s
    WHERE name = %(name)s AND (last_tick IS NULL OR last_tick < %(tick)s)
    RETURNING name, type, payload, queue
), job AS (
    INSERT INTO {schema}.jobs (queue, type, payload, unique_key)
    SELECT queue, type, payload, %(unique_key)s FROM advanced
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')
    DO NOTHING
    RETURNING id, queue
)
SELECT id, pg_notify(%(channel)s, queue) FROM job"""

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fired:
    """A tick a scheduler enqueued: the schedule, the tick (UTC), the new job's id."""

    name: str
    tick: datetime
    job_id: int


def check_cron(expression: object) -> str:
    """Return ``expression`` if it has the five fields of standard cron (minute, hour, day of
    month, month, day of week; e.g. ``*/5 * * * *``) and cronsim can parse it.

    cronsim also reads a sixth, leading field of *seconds* (``*/10 * * * * *``), but the
    scheduler works in whole minutes, so such an expression would fire once a minute, not as it
    says: it is refused. (cronsim knows no ``@daily``-style aliases; write ``0 0 * * *``.)

    :raises InvalidInputError: naming the expression and the reason (the number of fields, or
        cronsim's).
    """
    if not isinstance(expression, str):
        raise InvalidInputError(f"cron must be a string, got {type(expression).__name__}: {expression!r}")
    fields = len(expression.split())
    if fields != 5:
        raise InvalidInputError(
            f"cron expression {expression!r} has {fields} field{'' if fields == 1 else 's'}, "
            "not 5: minute hour day month weekday (no seconds)"
        )
    try:
        CronSim(expression, datetime.now(UTC))
    except (CronSimError, ValueError) as exc:
        raise InvalidInputError(f"cron expression {expression!r} is not valid: {exc}") from None
    return expression


def add(
    queue: Queue,
    conn: Connection,
    name: str,
    type: str,
    payload: Any = None,
    *,
    cron: str | None = None,
    every: float | None = None,
    queue_name: str = "default",
) -> None:
    """Add the schedule ``name`` (or change it: its last tick is kept).

    :param cron: a cron expression (UTC), e.g. ``"0 2 * * *"``; or
    :param every: an interval in seconds (at least 1). Exactly one of the two.
    :raises InvalidInputError: before anything is sent: neither or both given, a cron expression
        cronsim refuses, an interval under 1 s, a bad name (at most
        :data:`~pgqueue_lab.core.validate.MAX_KEY_LENGTH` characters), type or payload.
    """
    if (cron is None) == (every is None):
        raise InvalidInputError("give a schedule exactly one of cron='...' or every=seconds")
    if every is not None:
        every = validate.seconds(every, "every")
        if every < 1 or not math.isfinite(every):
            raise InvalidInputError(f"every must be at least 1 second, got {every}")
    params = {
        "name": validate.key(name, what="schedule name"),
        "type": validate.job_type(type),
        "payload": validate.payload_json({} if payload is None else payload),
        "queue": validate.job_type(queue_name, what="queue name"),
        "cron": None if cron is None else check_cron(cron),
        "every": every,
    }
    with queue._tx(conn):
        conn.execute(queue._q(SCHEDULE_UPSERT), params)


def remove(queue: Queue, conn: Connection, name: str) -> bool:
    """Delete the schedule ``name``; returns whether it existed."""
    params = {"name": validate.key(name, what="schedule name")}
    with queue._tx(conn):
        return conn.execute(queue._q(SCHEDULE_DELETE), params).fetchone() is not None


#: The most ticks of one schedule a scheduler enqueues at once: the latest ones since the
#: schedule's ``last_tick`` (older missed ticks are skipped).
CATCH_UP = 3

#: How long after a whole multiple of its interval :func:`run` wakes (clocks differ a little).
WAKE_LATE = 0.05


def due_ticks(
    cron: str | None,
    every: float | None,
    now: datetime,
    after: datetime | None,
    created_at: datetime,
    limit: int = CATCH_UP,
) -> list[datetime]:
    """The ticks at or before ``now``, after ``after`` (the last tick enqueued, if any) and not
    before ``created_at``: the latest ``limit`` of them, oldest first.

    :raises InvalidInputError: the cron expression is one :func:`check_cron` refuses.
    """
    ticks: list[datetime] = []
    tick_at = latest_tick(cron, every, now)
    earlier = None if cron is None else CronSim(cron, tick_at, reverse=True)
    while len(ticks) < limit and tick_at >= created_at and (after is None or tick_at > after):
        ticks.append(tick_at)
        if earlier is None:
            assert every is not None
            tick_at = datetime.fromtimestamp(tick_at.timestamp() - every, UTC)
        else:
            tick_at = next(earlier)
    return ticks[::-1]


def latest_tick(cron: str | None, every: float | None, now: datetime) -> datetime:
    """The latest tick at or before ``now`` (UTC) of a cron expression or an interval.

    :raises InvalidInputError: the cron expression is one :func:`check_cron` refuses.
    """
    now = now.astimezone(UTC)
    if every is not None:
        return datetime.fromtimestamp(math.floor(now.timestamp() / every) * every, UTC)
    assert cron is not None
    check_cron(cron)  # a row written by SQL may hold anything; tick() isolates it
    # cron ticks fall on whole minutes, and cronsim going backwards gives the ticks strictly
    # before its start: start one second into this minute.
    after = now.replace(second=1, microsecond=0)
    return next(CronSim(cron, after, reverse=True))


#: What a scheduler calls when one schedule fails (its name, the error), e.g. to count it.
OnError = Callable[[str, Exception], None]


def tick(queue: Queue, conn: Connection, on_error: OnError | None = None) -> list[Fired]:
    """Enqueue every schedule's due ticks that no scheduler enqueued yet (at most the latest
    :data:`CATCH_UP` of each, oldest first). Safe to call from any number of processes at once:
    each tick is enqueued exactly once.

    Each schedule is isolated: one that fails (a cron expression written into the table by hand
    that cronsim cannot parse, a statement the database refuses) is logged with its name and
    reported to ``on_error``, and the others are ticked as usual. It fails again on every tick
    until it is fixed or removed.

    :returns: what this call enqueued (what another scheduler took is not in it).
    :raises psycopg.OperationalError: (and the other connection errors) the connection was lost.
    """
    with queue._tx(conn):
        rows = conn.execute(queue._q(SCHEDULES)).fetchall()
    fired = []
    for name, _type, _payload, _queue, cron, every, last_tick, created_at, db_now in rows:
        try:
            for due in due_ticks(cron, every, db_now, last_tick, created_at):
                params = {
                    "name": name,
                    "tick": due,
                    "unique_key": f"schedule:{name}@{due.isoformat()}",
                    "channel": queue.channel,
                }
                with queue._tx(conn):
                    row = conn.execute(queue._q(SCHEDULE_FIRE), params).fetchone()
                if row is not None:
                    fired.append(Fired(name, due, int(row[0])))
        except Exception as exc:
            if conn.closed or conn.broken:  # a lost connection, not this schedule's fault
                raise
            _log.error("schedule %.100r skipped: %s: %s", name, type(exc).__name__, exc)
            if on_error is not None:
                on_error(name, exc)
    return fired


def until_next(interval: float, now: float) -> float:
    """Seconds from ``now`` (Unix time) until :data:`WAKE_LATE` after the next whole multiple of
    ``interval``."""
    return interval - now % interval + WAKE_LATE


def run(
    queue: Queue,
    connect: Callable[[], Connection],
    stop: threading.Event,
    interval: float = 1.0,
    on_error: OnError | None = None,
) -> None:
    """Call :func:`tick` just after each whole multiple of ``interval`` seconds (Unix time; plus
    :data:`WAKE_LATE`) until ``stop`` is set, reconnecting after a lost connection (a worker's
    ``schedules=True`` runs this in a thread). A call that takes longer than ``interval`` skips
    a wake-up; the next call catches the missed ticks up (see :func:`tick`). A failing schedule
    is reported to ``on_error`` (see :func:`tick`); any other unexpected error is logged,
    reported as ``on_error("(scheduler)", exc)``, and the next tick tried: the thread never
    dies silently."""
    conn: Connection | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = connect()
                tick(queue, conn, on_error)
            except CONNECTION_ERRORS as exc:
                _log.warning("scheduler lost its connection (%s)", exc)
                if conn is not None:
                    conn.close()
                conn = None
            except Exception as exc:  # noqa: BLE001 - the thread must not die silently
                _log.exception("scheduler tick failed")
                if on_error is not None:
                    on_error("(scheduler)", exc)
            stop.wait(until_next(interval, time.time()))
    finally:
        if conn is not None:
            conn.close()


class Scheduler(Extension):
    """``Worker(..., schedules=True)``: a scheduler thread beside the worker's (:func:`run`).

    A schedule whose tick fails is counted in ``stats.schedule_errors`` and listed in
    ``stats.errors`` once per schedule and kind of error (it fails again every tick).
    """

    def threads(self) -> list[threading.Thread]:
        worker = self.worker
        return [threading.Thread(
            target=run, args=(worker.queue, self.connect, self.stopping),
            kwargs={"on_error": self.failed}, name=f"{worker.name}-scheduler", daemon=True)]  # fmt: skip

    def failed(self, name: str, exc: Exception) -> None:
        """The scheduler thread's report of a schedule whose tick failed."""
        message = f"schedule {name[:100]!r} failed: {type(exc).__name__} (see the log)"
        with self.lock:
            self.worker.stats.schedule_errors += 1
            if message not in self.worker.stats.errors:
                self.worker.stats.errors.append(message)


def scheduling(worker: Worker) -> Scheduler | None:
    """A worker made with ``schedules=True`` runs a scheduler (an entry of
    :data:`pgqueue_lab.core.worker.EXTENSIONS`)."""
    return Scheduler(worker) if worker.schedules else None
