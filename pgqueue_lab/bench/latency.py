"""End-to-end latency: an enqueue's commit to its handler starting, idle and busy.

A *probe* job is enqueued every few milliseconds and its handler notes when it starts. Idle,
the probes are the only jobs; busy, a feeder on its own connection keeps enqueueing no-op jobs
at a steady rate (:data:`BUSY_RATE` jobs/s, in batches every 10 ms), so each probe lands in a
queue that is being worked and waits behind whatever was claimed before it. Both consumers run
one thread that claims up to ``batch_size`` jobs: the :class:`~pgqueue_lab.core.worker.Worker`, and
the baseline, a raw loop on one connection (``LISTEN``; on each notification, claim and complete
batches until none is left).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from ..core import db, sql
from ..core.queue import Connection, Job, NewJob, Queue
from ..core.worker import Worker
from .common import NOOP, WARMUP, BenchError
from .drain import RAW_CLAIM, RAW_COMPLETE
from .wakeup import IS_LISTENING

#: Jobs per second the feeder enqueues while the consumer is busy.
BUSY_RATE = 2000
#: The feeder enqueues a batch this often (seconds).
FEED_EVERY = 0.01


def _wait_listening(conn: Connection, queue: Queue, timeout: float = 10.0) -> None:
    """Wait until a session is LISTENing on ``queue``'s channel (the consumer is ready)."""
    statement = sql.compose(sql.LISTEN, queue.schema, channel=queue.channel).as_string(conn)
    deadline = time.monotonic() + timeout
    while not conn.execute(IS_LISTENING, {"statement": statement}).fetchone()[0]:  # type: ignore[index]
        if time.monotonic() > deadline:
            raise BenchError(f"nobody listened on {queue.channel!r} within {timeout:g} s")
        time.sleep(0.01)


def end_to_end_latencies(
    dsn: str,
    queue: Queue,
    consumer: str,
    *,
    busy: bool,
    samples: int,
    batch_size: int = 50,
    rate: int = BUSY_RATE,
    seed: int = 13,
) -> list[float]:
    """Seconds from a probe's enqueue commit to its handler starting, ``samples`` times.

    :param consumer: ``"worker"`` (a one-thread :class:`Worker`, LISTEN and a 1-s poll) or
        ``"raw"`` (the raw loop).
    :param busy: keep the consumer busy with ``rate`` no-op jobs per second meanwhile.
    :raises BenchError: a probe not started within 10 s.
    """
    stamps: dict[int, float] = {}
    arrived = threading.Event()

    def handler(job: Job) -> None:
        if isinstance(job.payload, dict) and "probe" in job.payload:
            stamps[job.id] = time.perf_counter()
            arrived.set()

    stop = threading.Event()
    errors: list[BaseException] = []

    def guarded(target: Any) -> Any:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - reported by the measuring thread
                errors.append(exc)
                arrived.set()

        return run

    claim, complete = sql.compose(RAW_CLAIM, queue.schema), sql.compose(RAW_COMPLETE, queue.schema)

    def raw_loop() -> None:
        with db.connect(dsn) as conn:
            queue.listen(conn)
            while not stop.is_set():
                for _ in conn.notifies(timeout=0.1, stop_after=1):
                    pass
                while rows := conn.execute(claim, {"limit": batch_size}).fetchall():
                    for job_id, payload in rows:
                        handler(Job(job_id, "default", NOOP, payload, 1, 1))
                    conn.execute(complete, {"ids": [row[0] for row in rows]})

    def feeder() -> None:
        per_batch = max(1, round(rate * FEED_EVERY))
        with db.connect(dsn) as conn:
            next_at = time.perf_counter()
            while not stop.is_set():
                queue.enqueue_many(conn, [NewJob(NOOP, {"n": i}) for i in range(per_batch)])
                next_at += FEED_EVERY
                time.sleep(max(0.0, next_at - time.perf_counter()))

    rng = random.Random(seed)
    latencies: list[float] = []
    threads = [threading.Thread(target=guarded(raw_loop), daemon=True)] if consumer == "raw" else []
    if busy:
        threads.append(threading.Thread(target=guarded(feeder), daemon=True))
    worker = None
    if consumer == "worker":
        worker = Worker(queue, {NOOP: handler}, dsn=dsn, batch_size=batch_size, name="bench")
    with db.connect(dsn) as conn:
        if worker is not None:
            worker.start()
        else:
            threads[0].start()
        _wait_listening(conn, queue)
        for thread in threads[1 if consumer == "raw" else 0 :]:
            thread.start()
        try:
            for i in range(WARMUP + samples):
                arrived.clear()
                job_id = queue.enqueue(conn, NOOP, {"probe": i})
                committed = time.perf_counter()
                if not arrived.wait(10):
                    raise BenchError(f"{consumer}: probe job #{job_id} not started within 10 s")
                if errors:
                    raise errors[0]
                if i >= WARMUP:
                    latencies.append(stamps[job_id] - committed)
                time.sleep(rng.uniform(0.001, 0.005))
        finally:
            stop.set()
            if worker is not None:
                worker.stop(timeout=10)
            for thread in threads:
                thread.join(10)
    return latencies
