"""Wake-up latency: an enqueue's commit to its handler starting, one job at a time."""

from __future__ import annotations

import random
import threading
import time

from ..core import db, sql
from ..core.queue import Connection, Job, Queue
from ..core.worker import Worker
from .common import NOOP, WARMUP, BenchError
from .drain import RAW_CLAIM, RAW_COMPLETE

#: Is a session of this database LISTENing with this exact statement? (Its last statement,
#: while it waits.) ``pg_stat_activity`` is the whole server's: another database may have a
#: session that ran the same ``LISTEN`` (a class on one server), so the database is named.
IS_LISTENING = """\
SELECT EXISTS (SELECT 1 FROM pg_stat_activity
               WHERE datname = current_database() AND query = %(statement)s)"""


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
