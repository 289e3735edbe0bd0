"""The live view of a queue: ``pgqueue-lab watch`` in a terminal, :func:`live` in a notebook.

About twice a second it asks the database (the statements are this module's ``WATCH_*``):

- how many jobs are in each state;
- per worker, the jobs it completed, and how many per second over the last few seconds;
- the oldest pending job and how long it has waited;
- the running jobs, with the worker thread holding each and how much of its lease is left
  (kill a worker and watch its leases run out, then its jobs come back);
- sessions of this database waiting for a lock (``pg_locks``, ``pg_blocking_pids``): with
  ``SKIP LOCKED`` nobody waits;
- live and dead rows of the jobs table (every claim and completion leaves a dead row until
  vacuum removes it);
- the queue's health (:mod:`pgqueue_lab.features.health`): the oldest open snapshot holding back vacuum,
  dead rows, the backlog, and a warning for each figure past its threshold.

In a terminal the frame is drawn with `rich <https://rich.readthedocs.io>`_ until Ctrl-C. In a
notebook, :func:`live` redraws one output in place (an IPython display handle, no widget) while
workers run elsewhere, then leaves a final frame holding only what does not vary from run to run
(:meth:`Snapshot.summary`), so strict nbval can compare it.
"""

from __future__ import annotations

import argparse
import importlib
import io
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import psycopg

from ..core import db, sql, validate
from ..core.queue import Connection, Queue
from ..errors import DatabaseUnavailableError, QueueError, QueueNotFoundError
from ..features import health
from . import terminal

# -- statements (print one: ``print(watch.WATCH_WORKERS)``) --------------------------------------

#: Per worker (the ``worker_id`` without its thread number: ``worker-a-2`` counts for
#: ``worker-a``): jobs it completed, how many of them in the last ``window`` seconds (the
#: rate), and what it holds or failed now.
WATCH_WORKERS = """\
SELECT regexp_replace(worker_id, '-[0-9]+$', '') AS worker,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'completed'
                          AND finished_at > now() - make_interval(secs => %(window)s)) AS recent,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM {schema}.jobs
WHERE worker_id IS NOT NULL
GROUP BY 1
ORDER BY 1"""

#: The pending job that has waited longest since it was enqueued (scheduled ones included).
WATCH_OLDEST_PENDING = """\
SELECT id, type, extract(epoch FROM now() - created_at)::float8 AS age, run_at > now() AS scheduled
FROM {schema}.jobs
WHERE status = 'pending'
ORDER BY created_at, id
LIMIT 1"""

#: Running jobs with their worker thread, how long they have run and how much of their lease
#: is left (negative: expired, a rescue will take the job back).
WATCH_RUNNING = """\
SELECT id, type, worker_id, attempts,
       extract(epoch FROM now() - started_at)::float8 AS running_for,
       extract(epoch FROM locked_until - now())::float8 AS lease_left
FROM {schema}.jobs
WHERE status = 'running'
ORDER BY worker_id, id
LIMIT %(limit)s"""

#: Sessions of this database waiting for a lock (``pg_locks.granted`` false), with the
#: sessions that block them (``pg_blocking_pids``). Workers that claim with ``SKIP LOCKED``
#: never wait here for a row lock (a table lock taken by DDL would still stop them); plain
#: ``FOR UPDATE`` makes them queue up (notebook 03). Another role's query text reads
#: ``<insufficient privilege>``.
WATCH_LOCK_WAITS = """\
SELECT a.pid, a.application_name, l.locktype, l.mode, pg_blocking_pids(a.pid) AS blocked_by,
       extract(epoch FROM now() - l.waitstart)::float8 AS waiting_for, left(a.query, 60) AS query
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname = current_database()
ORDER BY a.pid"""

#: Seconds over which the completion rate is counted.
DEFAULT_WINDOW = 5.0
#: Seconds between frames.
DEFAULT_INTERVAL = 0.5
#: Running jobs shown (the rest are counted).
MAX_RUNNING = 12
#: Characters per line of a frame drawn as text (a notebook, a log, a pipe).
TEXT_WIDTH = 100


@dataclass(frozen=True)
class WorkerRow:
    """One worker (all its threads): jobs completed, completed in the window, running, failed."""

    name: str
    completed: int
    recent: int
    running: int
    failed: int


@dataclass(frozen=True)
class RunningJob:
    id: int
    type: str
    worker_id: str
    attempts: int
    running_for: float | None
    lease_left: float | None


@dataclass(frozen=True)
class LockWait:
    pid: int
    application_name: str
    locktype: str
    mode: str
    blocked_by: list[int]
    waiting_for: float | None
    query: str


@dataclass(frozen=True)
class Snapshot:
    """What :func:`take` saw of one queue at one moment."""

    schema: str
    window: float
    counts: dict[str, int]
    workers: list[WorkerRow]
    oldest_pending: tuple[int, str, float, bool] | None  # id, type, age in seconds, scheduled
    running: list[RunningJob]
    lock_waits: list[LockWait]
    live_rows: int | None
    dead_rows: int | None
    vacuumed_ago: float | None
    health: health.Health | None = None

    def count(self, status: str) -> int:
        """Jobs in ``status`` (``"pending"``, ``"running"``, ``"completed"``, ``"failed"``)."""
        return self.counts.get(status, 0)

    def rate(self, worker: WorkerRow) -> float:
        """Jobs per second the worker completed over the last :attr:`window` seconds."""
        return worker.recent / self.window

    def summary(self) -> str:
        """The frame without what varies between runs (rates, ages, durations, row counts,
        per-worker shares): the final frame a notebook keeps."""
        counts = ", ".join(f"{self.count(s)} {s}" for s in sql.STATUSES)
        done = [w.name for w in self.workers if w.completed]
        lines = [
            f"queue {self.schema}",
            f"  jobs: {counts}",
            f"  workers that completed jobs: {', '.join(done) or 'none'}",
        ]
        if self.running:
            held = ", ".join(f"#{j.id} {j.type} ({j.worker_id})" for j in self.running)
            lines.append(f"  running jobs: {held}")
        else:
            lines.append("  running jobs: none")
        lines.append(f"  sessions waiting for a lock: {len(self.lock_waits) or 'none'}")
        return "\n".join(lines)


def take(conn: Connection, queue: Queue | str, *, window: float = DEFAULT_WINDOW) -> Snapshot:
    """Ask the database for one frame of ``queue``.

    :raises QueueNotFoundError: the queue does not exist (any more).
    """
    queue = queue if isinstance(queue, Queue) else Queue(queue)
    window = validate.seconds(window, "window")
    counts = dict(queue.status_counts(conn))  # raises QueueNotFoundError first

    def rows(statement: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return conn.execute(sql.compose(statement, queue.schema), params or {}).fetchall()

    workers = [
        WorkerRow(str(n), *(int(v) for v in rest)) for n, *rest in rows(WATCH_WORKERS, {"window": window})
    ]
    oldest = rows(WATCH_OLDEST_PENDING)
    running = [RunningJob(*row) for row in rows(WATCH_RUNNING, {"limit": MAX_RUNNING})]
    waits = [LockWait(*row) for row in conn.execute(WATCH_LOCK_WAITS).fetchall()]
    dead = conn.execute(health.WATCH_DEAD_ROWS, {"schema": queue.schema}).fetchone()
    report = health.check(conn, queue)
    return Snapshot(
        schema=queue.schema,
        window=window,
        counts=counts,
        workers=workers,
        oldest_pending=(int(oldest[0][0]), str(oldest[0][1]), float(oldest[0][2]), bool(oldest[0][3]))
        if oldest
        else None,
        running=running,
        lock_waits=waits,
        live_rows=None if dead is None else int(dead[0]),
        dead_rows=None if dead is None else int(dead[1]),
        vacuumed_ago=None if dead is None or dead[2] is None else float(dead[2]),
        health=report,
    )


# -- drawing -------------------------------------------------------------------------------------


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f} s" if abs(value) < 120 else f"{value / 60:.0f} min"


def renderable(snapshot: Snapshot, *, interval: float = DEFAULT_INTERVAL) -> Any:
    """The frame as a ``rich`` renderable (rich must be installed)."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    s = snapshot
    title = Text.assemble(
        ("pgqueue-lab watch", "bold"), f" · queue {s.schema} · every {interval:g} s · Ctrl-C stops"
    )
    colours = {
        "pending": "yellow",
        "running": "cyan",
        "completed": "green",
        "failed": "red",
        "cancelled": "magenta",
    }
    statuses = Text("jobs  ")
    for status in sql.STATUSES:
        statuses.append(f"{status} ", style=colours[status])
        statuses.append(f"{s.count(status)}   ", style="bold")
    oldest = "oldest pending job: none"
    if s.oldest_pending is not None:
        job_id, job_type, age, scheduled = s.oldest_pending
        later = ", scheduled for later" if scheduled else ""
        oldest = f"oldest pending job: #{job_id} {job_type}, enqueued {_seconds(age)} ago{later}"

    workers = Table(box=box.SIMPLE_HEAD, title_justify="left", padding=(0, 1))
    for name, justify in (
        ("worker", "left"),
        ("completed", "right"),
        (f"jobs/s (last {s.window:g} s)", "right"),
        ("running", "right"),
        ("failed", "right"),
    ):
        workers.add_column(name, justify=justify)  # type: ignore[arg-type]
    for w in s.workers:
        workers.add_row(w.name, str(w.completed), f"{s.rate(w):.1f}", str(w.running), str(w.failed))
    if not s.workers:
        workers.add_row("(no worker has claimed a job yet)", "", "", "", "")

    parts: list[Any] = [title, statuses, Text(oldest), workers]
    if s.running:
        running = Table(box=box.SIMPLE_HEAD, padding=(0, 1), title="running jobs", title_justify="left")
        for name in ("job", "type", "worker thread", "attempt", "running for", "lease left"):
            running.add_column(name, justify="left" if name in ("type", "worker thread") else "right")
        for j in s.running:
            lease = _seconds(j.lease_left)
            expired = j.lease_left is not None and j.lease_left < 0
            running.add_row(
                f"#{j.id}",
                j.type,
                j.worker_id,
                str(j.attempts),
                _seconds(j.running_for),
                Text(f"{lease} (expired)" if expired else lease, style="bold red" if expired else ""),
            )
        more = s.count("running") - len(s.running)
        if more > 0:
            running.add_row(f"+{more}", "more", "", "", "", "")
        parts.append(running)
    else:
        parts.append(Text("running jobs: none"))
    if s.lock_waits:
        waits = Table(
            box=box.SIMPLE_HEAD, padding=(0, 1), title="sessions waiting for a lock", title_justify="left"
        )
        for name in ("pid", "application", "lock", "blocked by", "waiting", "query"):
            waits.add_column(name)
        for lw in s.lock_waits:
            waits.add_row(
                str(lw.pid),
                lw.application_name,
                f"{lw.locktype} {lw.mode}",
                ", ".join(map(str, lw.blocked_by)),
                _seconds(lw.waiting_for),
                lw.query,
            )
        parts.append(waits)
    else:
        parts.append(Text("sessions waiting for a lock: none"))
    if s.dead_rows is not None:
        vacuumed = "never vacuumed" if s.vacuumed_ago is None else f"vacuumed {_seconds(s.vacuumed_ago)} ago"
        parts.append(Text(f"jobs table: {s.live_rows} live rows, {s.dead_rows} dead rows ({vacuumed})"))
    if s.health is not None:
        for line in s.health.lines():
            warning = line.startswith("WARNING")
            parts.append(Text(line, style="bold red" if warning else ""))
    return Group(*parts)


def frame_text(snapshot: Snapshot, *, interval: float = DEFAULT_INTERVAL, width: int = TEXT_WIDTH) -> str:
    """The frame as plain text (no colours): what a notebook shows live, and a log can keep."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system=None, force_terminal=False, force_jupyter=False)
    console.print(renderable(snapshot, interval=interval))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines()).strip("\n")


# -- in a notebook -------------------------------------------------------------------------------


def live(
    queue: Queue | str,
    *,
    until: Callable[[Snapshot], bool] | None = None,
    seconds: float | None = None,
    timeout: float = 60.0,
    interval: float = DEFAULT_INTERVAL,
    window: float = DEFAULT_WINDOW,
    dsn: str | None = None,
) -> Snapshot:
    """Show the live view in a notebook cell, redrawn in place, until ``until(snapshot)`` is true,
    ``seconds`` have passed, or the kernel is interrupted; then leave the final frame
    (:meth:`Snapshot.summary`, deterministic) and return the last snapshot.

    :param until: e.g. ``lambda s: s.count("completed") == 60``.
    :param timeout: the longest it watches. If ``until`` is given and still false by then,
        :class:`TimeoutError` is raised (with the last frame), so a notebook never hangs.
    """
    ipython: Any = importlib.import_module("IPython.display")  # the notebooks extra
    display, Pretty = ipython.display, ipython.Pretty

    timeout = validate.seconds(timeout, "timeout")
    interval = validate.seconds(interval, "interval")
    if seconds is not None:
        seconds = validate.seconds(seconds, "seconds")
    # One output, redrawn in place. It starts and ends empty, so the notebook keeps only the
    # final frame below it: nbval compares the first version of an output, the notebook file
    # stores the last one.
    handle = display(Pretty(""), display_id=True)
    snapshot: Snapshot | None = None
    started = time.monotonic()
    try:
        with db.connect(dsn, application_name="pgqueue-lab watch") as conn:
            while True:
                snapshot = take(conn, queue, window=window)
                handle.update(Pretty(frame_text(snapshot, interval=interval)))
                if until is not None and until(snapshot):
                    break
                elapsed = time.monotonic() - started
                if seconds is not None and elapsed >= seconds:
                    break
                if elapsed >= timeout:
                    if until is not None:
                        raise TimeoutError(
                            f"the live view waited {timeout:g} s and the condition did not come true; "
                            f"the last frame:\n{frame_text(snapshot, interval=interval)}"
                        )
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        pass  # "Interrupt kernel": stop watching, keep the frame
    finally:
        handle.update(Pretty(""))
    if snapshot is not None:
        display(Pretty(snapshot.summary()))
        return snapshot
    raise KeyboardInterrupt


# -- in a terminal -------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = "A live view of a queue, redrawn about twice a second until Ctrl-C."
    parser.add_argument("--schema", required=True, help="the queue's schema")
    parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help=f"between frames (default {DEFAULT_INTERVAL:g})",
    )
    parser.add_argument(
        "--window",
        type=float,
        default=DEFAULT_WINDOW,
        metavar="SECONDS",
        help=f"count completions per second over this long (default {DEFAULT_WINDOW:g})",
    )
    parser.add_argument("--once", action="store_true", help="print one frame and exit")


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    try:
        from rich.console import Console
        from rich.live import Live
        from rich.text import Text
    except ImportError:
        raise QueueError("pgqueue-lab watch draws with rich: pip install 'pgqueue-lab[classroom]'") from None
    queue = Queue(args.schema)
    interval = validate.seconds(args.interval, "--interval")
    if interval < 0.1:
        raise QueueError(f"--interval must be at least 0.1 seconds, got {args.interval:g}")
    window = validate.seconds(args.window, "--window")
    if window <= 0:
        raise QueueError(f"--window must be positive, got {args.window:g}")
    out = out or sys.stdout
    console = Console(file=out, width=None if out.isatty() else TEXT_WIDTH)
    terminal.require_queue(queue)
    conn = db.connect(application_name="pgqueue-lab watch")
    try:
        frame = renderable(take(conn, queue, window=window), interval=interval)
        if args.once:
            console.print(frame)
            return 0
        with Live(frame, console=console, auto_refresh=False) as view:
            while True:
                time.sleep(interval)
                try:
                    if conn.closed:
                        conn = db.connect(application_name="pgqueue-lab watch")
                    frame = renderable(take(conn, queue, window=window), interval=interval)
                except QueueNotFoundError:
                    frame = Text(f"the queue {queue.schema} does not exist (any more); waiting for it")
                except (psycopg.OperationalError, DatabaseUnavailableError) as exc:
                    conn.close()
                    reason = (str(exc).strip().splitlines() or ["?"])[0]
                    frame = Text(f"the database does not answer ({reason}); trying again", style="red")
                view.update(frame, refresh=True)
    except KeyboardInterrupt:
        return 0
    finally:
        conn.close()
