"""What every workload of the benchmark shares: the result row, a fresh queue, threads."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from ..core import sql
from ..core.queue import Connection, NewJob, Queue

NOOP = "noop"
VACUUM_ANALYZE = "VACUUM (ANALYZE) {schema}.jobs"

#: Bench output columns (table and CSV).
COLUMNS = ("section", "workload", "metric", "value", "baseline", "ratio", "target", "met", "count", "runs")
WARMUP = 3


class BenchError(RuntimeError):
    """A workload did not finish as it should (a job lost, a wake-up that never came)."""


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


def in_threads(count: int, target: Callable[[], None]) -> float:
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


def noop(job: object) -> None:
    """The benchmark's handler: does nothing, so the queue's own cost is what is measured."""


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, interpolated."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
