"""Measure the queue against minimal raw-SQL baselines: ``pgqueue-lab bench``.

Every figure is printed beside a *baseline* measured in the same run on the same database, and
as a ratio to it, so a slow or busy machine shifts both and the ratio still means something:

- **drain**: the :class:`~pgqueue_lab.worker.Worker` draining no-op jobs with 1, 2, 4 and 8
  threads, and the seed's algorithm (two transactions per job), against a raw batched loop
  (8 threads, one ``UPDATE ... RETURNING`` claims a batch, one ``id = ANY`` completes it);
- **enqueue**: ``queue.enqueue`` per job and ``queue.enqueue_many`` (1000 per call) against
  ``COPY`` (1000 rows per transaction);
- **wake-up**: commit of an enqueue -> handler start, with the Worker's LISTEN and with the
  Worker only polling, against a raw LISTEN-then-claim loop;
- **soak** (``--soak SECONDS``, run on its own): keep enqueueing and draining, and report the
  throughput of each interval against that of the first tenth of the run.

Throughputs are medians of ``--repeats`` runs (the workloads take turns, so a burst of load
from elsewhere hits all of them); latency percentiles pool the samples of all runs. Each
workload gets its own fresh schema, dropped afterwards. Nothing here asserts a result: the
targets are printed, met or not.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import TextIO

from psycopg import pq
from psycopg.types.json import Jsonb

from . import db, sql
from .queue import Connection, Job, NewJob, Queue
from .worker import Worker

NOOP = "noop"

#: The baseline claim: the helper's index order, only what a handler needs back, no BEGIN/COMMIT
#: round trips around it (an autocommit statement is its own transaction).
RAW_CLAIM = """\
WITH next AS (
    SELECT id FROM {schema}.jobs
    WHERE status = 'pending' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j SET status = 'running', started_at = now()
FROM next WHERE j.id = next.id
RETURNING j.id, j.payload"""

RAW_COMPLETE = """\
UPDATE {schema}.jobs SET status = 'completed', finished_at = now()
WHERE id = ANY(%(ids)s)"""

#: The seed's algorithm, transaction 1: take one pending job and mark it running...
SEED_SELECT = """\
SELECT * FROM {schema}.jobs
WHERE status = 'pending'
LIMIT 1
FOR UPDATE SKIP LOCKED"""
SEED_MARK_RUNNING = "UPDATE {schema}.jobs SET status = 'running', started_at = now() WHERE id = %(id)s"
#: ... transaction 2: mark it completed.
SEED_COMPLETE = "UPDATE {schema}.jobs SET status = 'completed', finished_at = now() WHERE id = %(id)s"

COPY_JOBS = "COPY {schema}.jobs (type, payload) FROM STDIN"
VACUUM_ANALYZE = "VACUUM (ANALYZE) {schema}.jobs"
#: Is a session LISTENing with this exact statement? (Its last statement, while it waits.)
IS_LISTENING = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE query = %(statement)s)"
DEAD_TUPLES = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %(table)s::regclass"

#: Bench output columns (table and CSV).
COLUMNS = ("section", "workload", "metric", "value", "baseline", "ratio", "target", "met", "count", "runs")
WARMUP = 3


class BenchError(RuntimeError):
    """A workload did not finish as it should (a job lost, a wake-up that never came)."""


@dataclass(frozen=True)
class Options:
    """What to run. :data:`QUICK` is a smaller set for a fast look."""

    jobs: int = 20_000
    repeats: int = 3
    batch_size: int = 50
    threads: tuple[int, ...] = (1, 2, 4, 8)
    baseline_threads: int = 8
    seed_jobs: int = 5_000
    single_enqueues: int = 2_000
    wakeups: int = 200
    poll_wakeups: int = 30
    poll_interval: float = 0.1


QUICK = Options(jobs=2_000, repeats=1, seed_jobs=1_000, single_enqueues=500, wakeups=50, poll_wakeups=10)


@dataclass(frozen=True)
class Row:
    """One figure: ``value`` in ``metric`` and its ratio to ``baseline``'s in the same run.

    ``count`` is the jobs or rows per run (drain, enqueue), the latency samples (wake-up), or
    the table's ``n_dead_tup`` at the end of the interval (soak); ``runs`` the value of each run.
    """

    section: str
    workload: str
    metric: str
    value: float
    baseline: str
    ratio: float
    target: str = ""
    count: int = 0
    runs: tuple[float, ...] = ()

    @property
    def met(self) -> bool | None:
        """Whether ``ratio`` meets ``target`` (``">= 0.8"`` or ``"<= 2"``); ``None`` without one."""
        if not self.target:
            return None
        op, limit = self.target.split()
        return self.ratio >= float(limit) if op == ">=" else self.ratio <= float(limit)

    def cells(self) -> dict[str, str]:
        """The row as text, one entry per :data:`COLUMNS`."""
        fmt = "{:.2f}" if self.metric.endswith("ms") else "{:.0f}"
        met = "" if self.met is None else ("yes" if self.met else "NO")
        runs = ";".join(fmt.format(v) for v in self.runs)
        return dict(
            zip(
                COLUMNS,
                (
                    self.section,
                    self.workload,
                    self.metric,
                    fmt.format(self.value),
                    self.baseline,
                    f"{self.ratio:.3f}",
                    self.target,
                    met,
                    str(self.count),
                    runs,
                ),
                strict=True,
            )
        )


# -- plumbing ------------------------------------------------------------------------------


@contextmanager
def fresh_queue(conn: Connection, tag: str) -> Iterator[Queue]:
    """A new queue in its own schema ``bench_<tag>_<random>``, dropped afterwards."""
    queue = Queue(f"bench_{tag}_{uuid.uuid4().hex[:8]}")
    queue.create(conn)
    try:
        yield queue
    finally:
        queue.drop(conn)


def fill(conn: Connection, queue: Queue, jobs: int) -> None:
    """Enqueue ``jobs`` no-op jobs (1000 per statement), then ``VACUUM (ANALYZE)`` the table."""
    for start in range(0, jobs, 1000):
        queue.enqueue_many(conn, [NewJob(NOOP, {"n": i}) for i in range(start, min(start + 1000, jobs))])
    conn.execute(sql.compose(VACUUM_ANALYZE, queue.schema))


def _in_threads(count: int, target: Callable[[], None]) -> float:
    """Run ``target`` in ``count`` threads; return the seconds until all finished."""
    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded) for _ in range(count)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def _noop(job: object) -> None:
    """The benchmark's handler: does nothing, so the queue's own cost is what is measured."""


@dataclass
class Traffic:
    """What a connection sent while traced (see :func:`traffic`)."""

    round_trips: int = 0
    statements: int = 0
    transactions: int = 0


@contextmanager
def traffic(conn: Connection) -> Iterator[Traffic]:
    """Count the round trips, statements and transactions ``conn`` sends inside the block.

    Uses libpq's protocol trace: each ``Sync`` (end of a parameterised statement) or simple
    ``Query`` (``BEGIN``, ``COMMIT``) is one round trip; a transaction is a ``COMMIT``/``ROLLBACK``
    or a statement sent outside ``BEGIN``, which commits on its own. The one-off round trip in
    which psycopg prepares a statement (on its fifth use) is left out.
    """
    counts = Traffic()
    fd, path = tempfile.mkstemp(prefix="pgqueue-lab-trace-")
    try:
        conn.pgconn.trace(fd)
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield counts
        finally:
            conn.pgconn.untrace()
        with open(path, encoding="utf-8", errors="replace") as f:
            messages = [line.rstrip("\n").split("\t") for line in f if line.startswith("F\t")]
    finally:
        os.close(fd)
        os.unlink(path)
    in_block = executed = False
    for message in messages:
        kind, text = message[2], "\t".join(message[3:]).strip().strip('"')
        if kind == "Query":
            counts.round_trips += 1
            command = text.split()[0].upper() if text else ""
            if command == "BEGIN":
                in_block = True
            elif command in ("COMMIT", "ROLLBACK"):
                in_block = False
                counts.transactions += 1
            else:
                counts.statements += 1
                counts.transactions += not in_block
        elif kind == "Execute":
            counts.statements += 1
            executed = True
        elif kind == "Sync" and executed:
            counts.round_trips += 1
            counts.transactions += not in_block
            executed = False


# -- drain ---------------------------------------------------------------------------------


def worker_drain(dsn: str, queue: Queue, *, threads: int, batch_size: int) -> float:
    """Drain the queue with a :class:`Worker`; return the seconds taken (connecting included)."""
    worker = Worker(queue, {NOOP: _noop}, dsn=dsn, threads=threads, batch_size=batch_size, name="bench")
    start = time.perf_counter()
    worker.run(until_empty=True)
    return time.perf_counter() - start


def raw_batch(conn: Connection, queue: Queue, limit: int) -> int:
    """The baseline: claim up to ``limit`` jobs (:data:`RAW_CLAIM`), run them, complete them in one
    statement (:data:`RAW_COMPLETE`), each statement its own transaction. Returns the jobs run."""
    rows = conn.execute(sql.compose(RAW_CLAIM, queue.schema), {"limit": limit}).fetchall()
    for _id, payload in rows:
        _noop(payload)
    if rows:
        conn.execute(sql.compose(RAW_COMPLETE, queue.schema), {"ids": [row[0] for row in rows]})
    return len(rows)


def seed_job(conn: Connection, queue: Queue) -> bool:
    """The seed's algorithm, one job: take it and mark it running in one transaction, run it,
    mark it completed in a second one. Returns whether there was a job."""
    with conn.transaction():
        row = conn.execute(sql.compose(SEED_SELECT, queue.schema)).fetchone()
        if row is None:
            return False
        conn.execute(sql.compose(SEED_MARK_RUNNING, queue.schema), {"id": row[0]})
    _noop(row[3])
    conn.execute(sql.compose(SEED_COMPLETE, queue.schema), {"id": row[0]})
    return True


def raw_drain(dsn: str, queue: Queue, *, threads: int, batch_size: int) -> float:
    """Drain with :func:`raw_batch` in ``threads`` threads; return the seconds taken."""

    def loop() -> None:
        with db.connect(dsn) as conn:
            while raw_batch(conn, queue, batch_size):
                pass

    return _in_threads(threads, loop)


def seed_drain(dsn: str, queue: Queue, *, threads: int) -> float:
    """Drain with :func:`seed_job` in ``threads`` threads; return the seconds taken."""

    def loop() -> None:
        with db.connect(dsn) as conn:
            while seed_job(conn, queue):
                pass

    return _in_threads(threads, loop)


def _drain_seconds(conn: Connection, jobs: int, tag: str, drain: Callable[[Queue], float]) -> float:
    with fresh_queue(conn, tag) as queue:
        fill(conn, queue, jobs)
        seconds = drain(queue)
        left = dict(queue.status_counts(conn))
        if left["completed"] != jobs:
            raise BenchError(f"{tag}: {left['completed']} of {jobs} jobs completed ({left})")
    return seconds


# -- enqueue -------------------------------------------------------------------------------


def enqueue_single(conn: Connection, queue: Queue, rows: int) -> float:
    """``queue.enqueue`` once per job (a transaction each); return seconds."""
    start = time.perf_counter()
    for i in range(rows):
        queue.enqueue(conn, NOOP, {"n": i})
    return time.perf_counter() - start


def enqueue_batch(conn: Connection, queue: Queue, rows: int, per_call: int = 1000) -> float:
    """``queue.enqueue_many`` with ``per_call`` jobs per call; return seconds."""
    start = time.perf_counter()
    for first in range(0, rows, per_call):
        queue.enqueue_many(conn, [NewJob(NOOP, {"n": i}) for i in range(first, min(first + per_call, rows))])
    return time.perf_counter() - start


def copy_rows(conn: Connection, queue: Queue, rows: int, per_txn: int = 1000) -> float:
    """The baseline: psycopg ``cursor.copy``, ``per_txn`` rows per transaction; return seconds."""
    statement = sql.compose(COPY_JOBS, queue.schema)
    start = time.perf_counter()
    for first in range(0, rows, per_txn):
        with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
            for i in range(first, min(first + per_txn, rows)):
                copy.write_row((NOOP, Jsonb({"n": i})))
    return time.perf_counter() - start


# -- wake-up -------------------------------------------------------------------------------


def _wait_listening(conn: Connection, statement: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not conn.execute(IS_LISTENING, {"statement": statement}).fetchone()[0]:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise BenchError(f"nobody ran {statement!r} within {timeout:g} s")
        time.sleep(0.01)


def wakeup_latencies(
    dsn: str, queue: Queue, mode: str, samples: int, *, poll_interval: float = 0.1, seed: int = 9
) -> list[float]:
    """Seconds from an enqueue's commit to its handler starting, ``samples`` times, one job at a time.

    :param mode: ``"listen"`` (the Worker with LISTEN, polling every second as a fallback),
        ``"poll"`` (the Worker polling every ``poll_interval`` seconds; its LISTEN connection
        listens on a channel nobody notifies) or ``"raw"`` (one connection: LISTEN, claim on
        each notification).
    """
    stamps: dict[int, float] = {}
    arrived = threading.Event()

    def handler(job: Job) -> None:
        stamps[job.id] = time.perf_counter()
        arrived.set()

    stop = threading.Event()
    listening = threading.Event()
    claim, complete = sql.compose(RAW_CLAIM, queue.schema), sql.compose(RAW_COMPLETE, queue.schema)

    def raw_loop() -> None:
        with db.connect(dsn) as conn:
            queue.listen(conn)
            listening.set()
            while not stop.is_set():
                for _ in conn.notifies(timeout=0.1, stop_after=1):
                    pass
                rows = conn.execute(claim, {"limit": 10}).fetchall()
                for job_id, payload in rows:
                    handler(Job(job_id, "default", NOOP, payload, 1, 1))
                if rows:
                    conn.execute(complete, {"ids": [row[0] for row in rows]})

    rng = random.Random(seed)
    gap = (0.0, poll_interval) if mode == "poll" else (0.0005, 0.005)
    latencies: list[float] = []
    worker: Worker | None = None
    raw = threading.Thread(target=raw_loop, daemon=True)
    with db.connect(dsn) as conn:
        if mode == "raw":
            raw.start()
            listening.wait(10)
        else:
            served = Queue(queue.schema)
            if mode == "poll":
                served.channel = f"{queue.schema}_unused"
            interval = poll_interval if mode == "poll" else 1.0
            worker = Worker(served, {NOOP: handler}, dsn=dsn, poll_interval=interval, name="bench")
            worker.start()
            if mode == "listen":
                statement = sql.compose(sql.LISTEN, queue.schema, channel=queue.channel)
                _wait_listening(conn, statement.as_string(conn))
        try:
            for i in range(WARMUP + samples):
                arrived.clear()
                job_id = queue.enqueue(conn, NOOP, {"n": i})
                committed = time.perf_counter()
                if not arrived.wait(10):
                    raise BenchError(f"{mode}: job #{job_id} not picked up within 10 s")
                if i >= WARMUP:
                    latencies.append(stamps[job_id] - committed)
                time.sleep(rng.uniform(*gap))
        finally:
            stop.set()
            if worker is not None:
                worker.stop(timeout=10)
            if raw.is_alive():
                raw.join(10)
    return latencies


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- the run -------------------------------------------------------------------------------


def run(options: Options, dsn: str | None = None) -> list[Row]:
    """Run every workload but the soak ``options.repeats`` times, in turns; return the rows."""
    dsn = dsn or db.get_dsn()
    o = options
    rates: dict[str, list[float]] = {}
    waits: dict[str, list[float]] = {}
    raw_name = f"raw loop, {o.baseline_threads} threads, batch {o.batch_size}"
    seed_name = f"seed's algorithm, {o.baseline_threads} threads"
    drains: list[tuple[str, int, Callable[[Queue], float]]] = [
        (raw_name, o.jobs, lambda q: raw_drain(dsn, q, threads=o.baseline_threads, batch_size=o.batch_size))
    ]

    def with_worker(threads: int) -> Callable[[Queue], float]:
        return lambda q: worker_drain(dsn, q, threads=threads, batch_size=o.batch_size)

    for n in o.threads:
        name = f"Worker, {n} thread{'s' if n > 1 else ''}, batch {o.batch_size}"
        drains.append((name, o.jobs, with_worker(n)))
    drains.append((seed_name, o.seed_jobs, lambda q: seed_drain(dsn, q, threads=o.baseline_threads)))
    enqueues: list[tuple[str, int, Callable[[Connection, Queue, int], float]]] = [
        ("COPY, 1000 rows/txn", o.jobs, copy_rows),
        ("enqueue_many, 1000 jobs/call", o.jobs, enqueue_batch),
        ("enqueue, 1 job/call", o.single_enqueues, enqueue_single),
    ]
    wakeups = [
        ("raw LISTEN loop", "raw", o.wakeups),
        ("Worker, LISTEN", "listen", o.wakeups),
        (f"Worker, polling every {o.poll_interval * 1000:g} ms", "poll", o.poll_wakeups),
    ]
    with db.connect(dsn) as conn:
        # untimed warm-up: the first drain of a process runs cold (connections, caches)
        _drain_seconds(conn, 1000, "warmup", lambda q: raw_drain(dsn, q, threads=2, batch_size=50))
        for _ in range(o.repeats):
            for name, jobs, drain in drains:
                rates.setdefault(name, []).append(jobs / _drain_seconds(conn, jobs, "drain", drain))
            for name, count, enqueue in enqueues:
                with fresh_queue(conn, "enqueue") as queue:
                    rates.setdefault(name, []).append(count / enqueue(conn, queue, count))
            for name, mode, samples in wakeups:
                with fresh_queue(conn, "wakeup") as queue:
                    waits.setdefault(name, []).extend(
                        wakeup_latencies(dsn, queue, mode, samples, poll_interval=o.poll_interval)
                    )

    rows: list[Row] = []

    def add(section: str, names: list[tuple[str, int]], unit: str, target: dict[str, str]) -> None:
        base = statistics.median(rates[names[0][0]])
        for name, count in names:
            value = statistics.median(rates[name])
            rows.append(
                Row(
                    section,
                    name,
                    unit,
                    value,
                    names[0][0],
                    value / base,
                    target.get(name, ""),
                    count,
                    tuple(rates[name]),
                )
            )

    worker_top = f"Worker, {o.baseline_threads} threads, batch {o.batch_size}"
    add("drain", [(n, j) for n, j, _ in drains], "jobs/s", {worker_top: ">= 0.8"})
    add("enqueue", [(n, j) for n, j, _ in enqueues], "rows/s", {"enqueue_many, 1000 jobs/call": ">= 0.8"})
    for q in (50, 95, 99):
        base = percentile(waits[wakeups[0][0]], q)
        for name, mode, _ in wakeups:
            value = percentile(waits[name], q)
            target = "<= 2" if mode == "listen" and q == 99 else ""
            rows.append(
                Row(
                    "wake-up",
                    name,
                    f"p{q} ms",
                    value * 1000,
                    wakeups[0][0],
                    value / base,
                    target,
                    len(waits[name]),
                )
            )
    return rows


def soak(
    seconds: float,
    dsn: str | None = None,
    *,
    threads: int = 8,
    batch_size: int = 50,
    intervals: int = 30,
    vacuum_every: float | None = None,
) -> list[Row]:
    """Keep ``threads`` Worker threads draining while this thread keeps a backlog enqueued.

    Returns one row per interval (``seconds / intervals`` long): jobs completed per second and the
    ratio to the first tenth of the run; ``count`` is the table's ``n_dead_tup`` at its end.
    With ``vacuum_every``, a maintenance thread runs :meth:`Queue.vacuum` that often (seconds).
    """
    dsn = dsn or db.get_dsn()
    backlog = max(10_000, 4 * threads * batch_size)
    intervals = max(2, min(intervals, int(seconds)))
    step = seconds / intervals
    with db.connect(dsn) as conn, fresh_queue(conn, "soak") as queue:
        fill(conn, queue, backlog)
        enqueued = backlog
        worker = Worker(
            queue,
            {NOOP: _noop},
            dsn=dsn,
            threads=threads,
            batch_size=batch_size,
            poll_interval=0.1,
            name="bench",
        )
        table = f"{queue.schema}.jobs"
        marks: list[tuple[float, int, int]] = []
        done = threading.Event()

        def maintain(every: float) -> None:
            with db.connect(dsn) as vconn:
                while not done.wait(every):
                    queue.vacuum(vconn)

        maintenance = None
        if vacuum_every is not None:
            maintenance = threading.Thread(target=maintain, args=(vacuum_every,), daemon=True)
            maintenance.start()
        worker.start()
        try:
            start = next_mark = time.perf_counter()
            while len(marks) <= intervals:
                now = time.perf_counter()
                if now >= next_mark:
                    dead = conn.execute(DEAD_TUPLES, {"table": table}).fetchone() or (0,)
                    marks.append((now - start, worker.stats.total_completed, int(dead[0])))
                    next_mark += step
                elif enqueued - worker.stats.total_completed < backlog:
                    enqueue_batch(conn, queue, 1000)
                    enqueued += 1000
                else:
                    time.sleep(0.005)
        finally:
            done.set()
            worker.stop(timeout=30)
            if maintenance is not None:
                maintenance.join(timeout=60)
    per_interval = [
        ((t1, t2), (n2 - n1) / (t2 - t1), dead) for (t1, n1, _), (t2, n2, dead) in itertools.pairwise(marks)
    ]
    head = max(1, intervals // 10)
    base = statistics.mean(rate for _, rate, _ in per_interval[:head])
    label = f"first {per_interval[head - 1][0][1]:.0f} s"
    return [
        Row(
            "soak",
            f"{t1:.0f}-{t2:.0f} s",
            "jobs/s",
            rate,
            label,
            rate / base,
            ">= 0.8" if i >= head else "",
            dead,
        )
        for i, ((t1, t2), rate, dead) in enumerate(per_interval)
    ]


# -- output --------------------------------------------------------------------------------


def print_table(rows: list[Row], out: TextIO) -> None:
    """Print ``rows`` as an aligned text table, each figure beside its ratio to the baseline."""
    cells = [row.cells() for row in rows]
    shown = [c for c in COLUMNS if c != "runs"]
    widths = {c: max([len(c)] + [len(cell[c]) for cell in cells]) for c in shown}
    right = {"value", "ratio", "count"}
    for line in [dict(zip(shown, shown, strict=True)), *cells]:
        print(
            "  ".join(
                line[c].rjust(widths[c]) if c in right else line[c].ljust(widths[c]) for c in shown
            ).rstrip(),
            file=out,
        )


def write_csv(rows: list[Row], path: str) -> None:
    """Write ``rows`` to ``path`` as CSV, one column per :data:`COLUMNS`."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(row.cells() for row in rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``bench`` subcommand's options."""
    parser.description = (
        "Measure the Worker, enqueueing and wake-ups against minimal raw-SQL baselines, all in one "
        "run on the same database, and print each figure with its ratio to its baseline."
    )
    parser.add_argument("--jobs", type=int, help=f"jobs per drain/enqueue run (default {Options.jobs})")
    parser.add_argument("--repeats", type=int, help=f"runs of each workload (default {Options.repeats})")
    parser.add_argument("--batch-size", type=int, help=f"claim batch size (default {Options.batch_size})")
    parser.add_argument("--csv", metavar="FILE", help="also write the rows to this CSV file")
    parser.add_argument(
        "--soak",
        type=float,
        metavar="SECONDS",
        help="run only the soak: enqueue and drain (Worker, 8 threads) this long, report each interval",
    )
    parser.add_argument(
        "--vacuum-every",
        type=float,
        metavar="SECONDS",
        help="with --soak: VACUUM the jobs table this often from a maintenance thread",
    )
    parser.add_argument("--quick", action="store_true", help="fewer jobs and samples, one run")


def main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run what ``args`` asks for, print the table, write the CSV; return the exit status."""
    out = out or sys.stdout
    options = QUICK if args.quick else Options()
    chosen = {"jobs": args.jobs, "repeats": args.repeats, "batch_size": args.batch_size}
    options = replace(options, **{k: v for k, v in chosen.items() if v is not None})
    options = replace(
        options,
        seed_jobs=min(options.seed_jobs, options.jobs),
        single_enqueues=min(options.single_enqueues, options.jobs),
    )
    for f in fields(Options):
        value = getattr(options, f.name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            print(f"pgqueue-lab bench: error: {f.name} must be positive", file=sys.stderr)
            return 2
    dsn = db.get_dsn()
    with db.connect(dsn) as conn:
        server = f"PostgreSQL {db.server_major_version(conn)} ({db.source()})"
    if args.soak is not None:
        vacuum = "" if args.vacuum_every is None else f", VACUUM every {args.vacuum_every:g} s"
        print(
            f"soak: {args.soak:g} s, Worker 8 threads, batch {options.batch_size}{vacuum}, {server}", file=out
        )
        rows = soak(args.soak, dsn, batch_size=options.batch_size, vacuum_every=args.vacuum_every)
    else:
        print(
            f"bench: {options.jobs} jobs, batch {options.batch_size}, {options.repeats} run(s), "
            f"{server}; throughput = median of runs, ratio = value / baseline",
            file=out,
        )
        rows = run(options, dsn)
    print_table(rows, out)
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {len(rows)} rows to {args.csv}", file=out)
    return 0
