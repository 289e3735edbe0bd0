"""Measure the queue against minimal raw-SQL baselines: ``pgqueue-lab bench``.

Every figure is printed beside a *baseline* measured in the same run on the same database, and
as a ratio to it, so a slow or busy machine shifts both and the ratio still means something:

- **drain**: the :class:`~pgqueue_lab.core.worker.Worker` draining no-op jobs with 1, 2, 4 and 8
  threads, and the seed's algorithm (two transactions per job), against a raw batched loop
  (8 threads, one ``UPDATE ... RETURNING`` claims a batch, one ``id = ANY`` completes it);
- **enqueue**: ``queue.enqueue`` per job and ``queue.enqueue_many`` (1000 per call) against
  ``COPY`` (1000 rows per transaction);
- **wake-up**: commit of an enqueue -> handler start, with the Worker's LISTEN and with the
  Worker only polling, against a raw LISTEN-then-claim loop;
- **latency**: end to end, an enqueue's commit -> handler start, p50 and p99, for a consumer
  that is idle and one kept busy by a steady stream of other jobs, the Worker (one thread)
  against a raw LISTEN loop under the same load;
- **io-bound**: the Worker with handlers that sleep 5 ms, 1 to 16 threads; the figure is the
  scaling efficiency, N threads' throughput against N times one thread's;
- **soak** (``--soak SECONDS``, run on its own): keep enqueueing and draining, and report the
  throughput of each 30-s interval against that of the first.

One module per workload family (:mod:`.drain` with the I/O-bound drain, :mod:`.enqueue`,
:mod:`.wakeup`, :mod:`.latency`, :mod:`.soak`, :mod:`.peers`), the shared row and plumbing in
:mod:`.common`, the protocol counter in :mod:`.traffic`; this module holds the command line,
the run and the report.

- **peers** (``--peers``, run on its own; the ``bench`` extra): the Worker, pgqueuer and
  procrastinate drain the same no-op jobs on the same database at 1 and 8 jobs in flight.

Throughputs are medians of ``--repeats`` runs (the workloads take turns, so a burst of load
from elsewhere hits all of them); latency percentiles pool the samples of all runs. Each
workload gets its own fresh schema, dropped afterwards. Nothing here asserts a result: the
targets are printed, met or not.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import TextIO

from ..core import db
from ..core.queue import Connection, Queue
from . import peers
from .common import (
    COLUMNS,
    NOOP,
    VACUUM_ANALYZE,
    WARMUP,
    BenchError,
    Row,
    fill,
    fresh_queue,
    in_threads,
    noop,
    percentile,
)
from .drain import (
    RAW_CLAIM,
    RAW_COMPLETE,
    SEED_COMPLETE,
    SEED_MARK_RUNNING,
    SEED_SELECT,
    drain_seconds,
    io_drain,
    raw_batch,
    raw_drain,
    seed_drain,
    seed_job,
    worker_drain,
)
from .enqueue import COPY_JOBS, copy_rows, enqueue_batch, enqueue_single
from .latency import end_to_end_latencies
from .soak import DEAD_TUPLES, soak
from .traffic import Traffic, traffic
from .wakeup import IS_LISTENING, wakeup_latencies

__all__ = [
    "COLUMNS",
    "COPY_JOBS",
    "DEAD_TUPLES",
    "IS_LISTENING",
    "NOOP",
    "QUICK",
    "RAW_CLAIM",
    "RAW_COMPLETE",
    "SEED_COMPLETE",
    "SEED_MARK_RUNNING",
    "SEED_SELECT",
    "VACUUM_ANALYZE",
    "WARMUP",
    "BenchError",
    "Options",
    "Row",
    "Traffic",
    "add_arguments",
    "copy_rows",
    "drain_seconds",
    "end_to_end_latencies",
    "enqueue_batch",
    "enqueue_single",
    "fill",
    "fresh_queue",
    "in_threads",
    "io_drain",
    "main",
    "noop",
    "percentile",
    "print_table",
    "raw_batch",
    "raw_drain",
    "run",
    "seed_drain",
    "seed_job",
    "soak",
    "traffic",
    "wakeup_latencies",
    "worker_drain",
    "write_csv",
]


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
    latency_samples: int = 200
    io_threads: tuple[int, ...] = (1, 2, 4, 8, 16)
    io_jobs_per_thread: int = 400
    io_batch_size: int = 10


QUICK = Options(
    jobs=2_000,
    repeats=1,
    seed_jobs=1_000,
    single_enqueues=500,
    wakeups=50,
    poll_wakeups=10,
    latency_samples=30,
    io_jobs_per_thread=20,
)


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
    latencies = [
        (f"{who}, {load}", consumer, load == "busy")
        for load in ("idle", "busy")
        for who, consumer in (("raw LISTEN loop", "raw"), ("Worker", "worker"))
    ]

    def sleeping(threads: int) -> Callable[[Queue], float]:
        return lambda q: io_drain(dsn, q, threads=threads, batch_size=o.io_batch_size)

    ios = [
        (
            f"Worker, {n} thread{'s' if n > 1 else ''}, 5 ms sleeps, batch {o.io_batch_size}",
            n,
            o.io_jobs_per_thread * n,
            sleeping(n),
        )
        for n in o.io_threads
    ]
    with db.connect(dsn) as conn:
        # untimed warm-up: the first drain of a process runs cold (connections, caches)
        drain_seconds(conn, 1000, "warmup", lambda q: raw_drain(dsn, q, threads=2, batch_size=50))
        for _ in range(o.repeats):
            for name, jobs, drain in drains:
                rates.setdefault(name, []).append(jobs / drain_seconds(conn, jobs, "drain", drain))
            for name, count, enqueue in enqueues:
                with fresh_queue(conn, "enqueue") as queue:
                    rates.setdefault(name, []).append(count / enqueue(conn, queue, count))
            for name, mode, samples in wakeups:
                with fresh_queue(conn, "wakeup") as queue:
                    waits.setdefault(name, []).extend(
                        wakeup_latencies(dsn, queue, mode, samples, poll_interval=o.poll_interval)
                    )
            for name, consumer, busy in latencies:
                with fresh_queue(conn, "latency") as queue:
                    waits.setdefault(name, []).extend(
                        end_to_end_latencies(
                            dsn,
                            queue,
                            consumer,
                            busy=busy,
                            samples=o.latency_samples,
                            batch_size=o.batch_size,
                        )
                    )
            for name, _, jobs, drain in ios:
                rates.setdefault(name, []).append(jobs / drain_seconds(conn, jobs, "io", drain))

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
    for load in (0, 2):  # idle, busy: each beside the raw loop under the same load
        raw, worker = latencies[load][0], latencies[load + 1][0]
        for q in (50, 99):
            base = percentile(waits[raw], q)
            for name in (raw, worker):
                value = percentile(waits[name], q)
                rows.append(
                    Row("latency", name, f"p{q} ms", value * 1000, raw, value / base, "", len(waits[name]))
                )
    one = statistics.median(rates[ios[0][0]])
    for name, n, jobs, _ in ios:  # scaling efficiency: N threads against N times one thread
        value = statistics.median(rates[name])
        rows.append(
            Row(
                "io-bound",
                name,
                "jobs/s",
                value,
                f"{n} x {ios[0][0]}",
                value / (n * one),
                ">= 0.8" if n > 1 else "",
                jobs,
                tuple(rates[name]),
            )
        )
    return rows


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
    parser.add_argument(
        "--peers",
        action="store_true",
        help="run only the peers: the Worker, pgqueuer and procrastinate drain the same no-op jobs "
        "at 1 and 8 jobs in flight (needs: pip install 'pgqueue-lab[bench]')",
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
    footer = ""
    if args.peers and args.soak is not None:
        print("pgqueue-lab bench: error: --peers and --soak run alone: choose one", file=sys.stderr)
        return 2
    absent = peers.missing() if args.peers else []
    if absent:
        print(
            f"pgqueue-lab bench: error: --peers needs {' and '.join(absent)}: "
            "pip install 'pgqueue-lab[bench]'",
            file=sys.stderr,
        )
        return 2
    if args.peers:
        print(
            f"peers: {options.jobs} jobs (procrastinate {options.jobs // peers.SLOW_PEER_SHARE}), "
            f"batch {options.batch_size}, {options.repeats} run(s), {server}; "
            "ratio = value / best peer at the same concurrency",
            file=out,
        )
        rows = peers.run_peers(dsn, jobs=options.jobs, repeats=options.repeats, batch_size=options.batch_size)
    elif args.soak is not None:
        vacuum = "" if args.vacuum_every is None else f", VACUUM every {args.vacuum_every:g} s"
        print(
            f"soak: {args.soak:g} s, Worker 8 threads, batch {options.batch_size}{vacuum}, {server}", file=out
        )
        passes: list[float] = []
        rows = soak(
            args.soak,
            dsn,
            batch_size=options.batch_size,
            vacuum_every=args.vacuum_every,
            autovacuum_passes=passes,
        )
        seen = ", ".join(f"{t:.0f} s" for t in passes) or "none"
        footer = f"autovacuum passes on the jobs table, seen ending at: {seen}"
    else:
        print(
            f"bench: {options.jobs} jobs, batch {options.batch_size}, {options.repeats} run(s), "
            f"{server}; throughput = median of runs, ratio = value / baseline",
            file=out,
        )
        rows = run(options, dsn)
    print_table(rows, out)
    if footer:
        print(footer, file=out)
    if args.csv:
        write_csv(rows, args.csv)
        print(f"wrote {len(rows)} rows to {args.csv}", file=out)
    return 0
