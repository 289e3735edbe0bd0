"""The soak: keep enqueueing and draining for a long time, and report each interval."""

from __future__ import annotations

import itertools
import statistics
import threading
import time

from ..core import db
from ..core.worker import Worker
from .common import NOOP, Row, fill, fresh_queue, noop
from .enqueue import enqueue_batch

DEAD_TUPLES = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relid = %(table)s::regclass"
#: How many times autovacuum has vacuumed the table (counted when a pass ends).
AUTOVACUUM_COUNT = "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relid = %(table)s::regclass"


def soak(
    seconds: float,
    dsn: str | None = None,
    *,
    threads: int = 8,
    batch_size: int = 50,
    interval: float = 30.0,
    vacuum_every: float | None = None,
    autovacuum_passes: list[float] | None = None,
) -> list[Row]:
    """Keep ``threads`` Worker threads draining while this thread keeps a backlog enqueued.

    Returns one row per interval (``interval`` seconds long, or half the run if that is shorter):
    jobs completed per second and the ratio to the first interval; ``count`` is the table's
    ``n_dead_tup`` at its end. With ``vacuum_every``, a maintenance thread runs
    :meth:`Queue.vacuum` that often (seconds); without it only autovacuum cleans up.
    ``autovacuum_passes``, if given, receives the seconds into the run at which autovacuum was
    seen to have finished a pass on the table (looked at once a second).
    """
    dsn = dsn or db.get_dsn()
    backlog = max(10_000, 4 * threads * batch_size)
    intervals = max(2, round(seconds / min(interval, seconds / 2)))
    step = seconds / intervals
    with db.connect(dsn) as conn, fresh_queue(conn, "soak") as queue:
        fill(conn, queue, backlog)
        enqueued = backlog
        worker = Worker(
            queue,
            {NOOP: noop},
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
            start = next_mark = next_look = time.perf_counter()
            passes = 0
            while len(marks) <= intervals:
                now = time.perf_counter()
                if now >= next_look and autovacuum_passes is not None:
                    (count,) = conn.execute(AUTOVACUUM_COUNT, {"table": table}).fetchone() or (0,)
                    autovacuum_passes.extend([now - start] * (int(count) - passes))
                    passes, next_look = int(count), now + 1.0
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
    head = 1
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
