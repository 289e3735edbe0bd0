"""Peers: the same no-op jobs drained by pgqueuer and procrastinate, beside the Worker.

Needs the optional ``bench`` extra (``pip install "pgqueue-lab[bench]"``). Each peer runs on
the same database, in a schema of its own (``bench_<peer>_<random>``, set as the connections'
``search_path`` when the peer is installed and run, dropped afterwards), at the settings its
documentation gives for throughput:

- **pgqueuer**: the asyncpg driver and uvloop (its own benchmark's choice), one
  ``QueueManager`` per connection in one event loop, ``run(batch_size=..., mode=drain)``;
  an ``async`` entrypoint;
- **procrastinate**: its psycopg connector, one worker with ``concurrency=N`` (async jobs run
  side by side on a pool of connections), ``wait=False`` (stop once the queue is empty), an
  ``async`` task; it fetches one job per query (it has no batch fetch).

"Equal concurrency" is the number of jobs in flight at once: N Worker threads (N connections),
N pgqueuer managers (N connections), procrastinate's ``concurrency=N``. Jobs are enqueued
(untimed) with each peer's own batch call; the timed part is the drain only, as for the Worker.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ..core import db, sql
from ..core.queue import Queue
from .common import NOOP, BenchError, Row
from .drain import drain_seconds, worker_drain

PEERS = ("pgqueuer", "procrastinate")
CREATE_SCHEMA = "CREATE SCHEMA {schema}"
DROP_SCHEMA = "DROP SCHEMA IF EXISTS {schema} CASCADE"
#: Jobs a peer left in its queue table (each peer deletes or marks what it finished).
PGQUEUER_LEFT = "SELECT count(*) FROM {schema}.pgqueuer"
PROCRASTINATE_LEFT = "SELECT count(*) FROM {schema}.procrastinate_jobs WHERE status <> 'succeeded'"


class PeerMissingError(RuntimeError):
    """A peer's package is not installed (``pip install "pgqueue-lab[bench]"``)."""


def missing() -> list[str]:
    """The peers whose package is not installed."""
    absent = []
    for name in PEERS:
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            absent.append(name)
    return absent


def version(peer: str) -> str:
    """The installed version of ``peer``'s package."""
    return importlib.metadata.version(peer)


def _libpq_params(dsn: str) -> dict[str, Any]:
    """``dsn`` as libpq keyword parameters (host may be a socket directory)."""
    from psycopg.conninfo import conninfo_to_dict

    return dict(conninfo_to_dict(dsn))


async def _pgqueuer(dsn: str, schema: str, jobs: int, concurrency: int, batch_size: int) -> float:
    import asyncpg  # type: ignore[import-not-found, unused-ignore]
    from pgqueuer.db import AsyncpgDriver  # type: ignore[import-not-found, unused-ignore]
    from pgqueuer.qm import QueueManager  # type: ignore[import-not-found, unused-ignore]
    from pgqueuer.queries import Queries  # type: ignore[import-not-found, unused-ignore]
    from pgqueuer.types import QueueExecutionMode  # type: ignore[import-not-found, unused-ignore]

    params = _libpq_params(dsn)

    async def connect() -> Any:
        return await asyncpg.connect(
            host=params.get("host"),
            port=params.get("port"),
            user=params.get("user"),
            password=params.get("password"),
            database=params.get("dbname"),
            server_settings={"search_path": schema},
        )

    setup = await connect()
    try:
        queries = Queries(AsyncpgDriver(setup))
        await queries.install()
        await queries.enqueue([NOOP] * jobs, [None] * jobs, [0] * jobs)
    finally:
        await setup.close()

    async def noop(job: object) -> None:
        """Does nothing, as the Worker's no-op handler."""

    connections = [await connect() for _ in range(concurrency)]
    managers = []
    for conn in connections:
        manager = QueueManager(Queries(AsyncpgDriver(conn)))
        manager.entrypoint(NOOP)(noop)
        managers.append(manager)
    try:
        start = time.perf_counter()
        await asyncio.gather(*(m.run(batch_size=batch_size, mode=QueueExecutionMode.drain) for m in managers))
        return time.perf_counter() - start
    finally:
        for conn in connections:
            await conn.close()


async def _procrastinate(dsn: str, schema: str, jobs: int, concurrency: int, batch_size: int) -> float:
    import procrastinate  # type: ignore[import-not-found, unused-ignore]

    connector = procrastinate.PsycopgConnector(
        conninfo=dsn,
        kwargs={"options": f"-c search_path={schema}"},
        min_size=1,
        max_size=concurrency + 2,
    )
    app = procrastinate.App(connector=connector)

    async def noop() -> None:
        """Does nothing, as the Worker's no-op handler."""

    task = app.task(name=NOOP)(noop)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for first in range(0, jobs, 1000):
            await task.batch_defer_async(*({} for _ in range(first, min(first + 1000, jobs))))
        start = time.perf_counter()
        await app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False, listen_notify=True
        )
        return time.perf_counter() - start


DRAINS: dict[str, Callable[[str, str, int, int, int], Awaitable[float]]] = {
    "pgqueuer": _pgqueuer,
    "procrastinate": _procrastinate,
}


def peer_drain(dsn: str, peer: str, *, jobs: int, concurrency: int, batch_size: int) -> float:
    """Install ``peer`` in a fresh schema, enqueue ``jobs`` no-op jobs, drain them with
    ``concurrency`` jobs in flight; return the drain's seconds. The schema is dropped afterwards.

    :raises PeerMissingError: the peer's package is not installed.
    :raises BenchError: jobs left unfinished.
    """
    if peer in missing():
        raise PeerMissingError(f"{peer} is not installed: pip install 'pgqueue-lab[bench]'")
    schema = f"bench_{peer}_{uuid.uuid4().hex[:8]}"
    left_sql = PGQUEUER_LEFT if peer == "pgqueuer" else PROCRASTINATE_LEFT
    with db.connect(dsn) as conn:
        conn.execute(sql.compose(CREATE_SCHEMA, schema))
        try:
            run = DRAINS[peer](dsn, schema, jobs, concurrency, batch_size)
            seconds = _run_loop(run, peer)
            left = conn.execute(sql.compose(left_sql, schema)).fetchone()
            if left is None or left[0]:
                raise BenchError(f"{peer}: {left and left[0]} of {jobs} jobs not finished")
        finally:
            conn.execute(sql.compose(DROP_SCHEMA, schema))
    return seconds


def _run_loop(coroutine: Awaitable[float], peer: str) -> float:
    """Run ``coroutine`` in a new event loop (uvloop for pgqueuer, as its benchmark does)."""
    if peer == "pgqueuer":
        import uvloop  # type: ignore[import-not-found, unused-ignore]

        return float(uvloop.run(coroutine))  # type: ignore[arg-type, unused-ignore]
    return asyncio.run(coroutine)  # type: ignore[arg-type]


#: procrastinate fetches one job per query and drains a few hundred jobs a second here: it gets
#: this share of the jobs, so a run stays within minutes (from 200 to 4,000 jobs its rate fell by a
#: fifth here).
SLOW_PEER_SHARE = 10


def _worker(dsn: str, threads: int, batch_size: int) -> Callable[[Queue], float]:
    return lambda queue: worker_drain(dsn, queue, threads=threads, batch_size=batch_size)


def run_peers(
    dsn: str,
    *,
    jobs: int,
    repeats: int,
    batch_size: int,
    concurrencies: tuple[int, ...] = (1, 8),
) -> list[Row]:
    """The Worker and each peer draining no-op jobs at equal concurrency, ``repeats`` times in
    turns; one row each, its ratio to the best peer at that concurrency (target: >= 3).

    :raises PeerMissingError: a peer's package is not installed.
    """
    absent = missing()
    if absent:
        raise PeerMissingError(f"not installed: {', '.join(absent)}; pip install 'pgqueue-lab[bench]'")
    rates: dict[tuple[int, str], list[float]] = {}
    names: dict[tuple[int, str], str] = {}
    counts: dict[tuple[int, str], int] = {}
    with db.connect(dsn) as conn:
        for _ in range(repeats):
            for n in concurrencies:
                key = (n, "Worker")
                names[key] = f"Worker, {n} thread{'s' if n > 1 else ''}, batch {batch_size}"
                counts[key] = jobs
                seconds = drain_seconds(conn, jobs, "peers", _worker(dsn, n, batch_size))
                rates.setdefault(key, []).append(jobs / seconds)
                for peer in PEERS:
                    key = (n, peer)
                    count = jobs if peer == "pgqueuer" else max(1, jobs // SLOW_PEER_SHARE)
                    if peer == "pgqueuer":
                        names[key] = (
                            f"pgqueuer {version(peer)}, {n} manager{'s' if n > 1 else ''}, batch {batch_size}"
                        )
                    else:
                        names[key] = f"procrastinate {version(peer)}, concurrency {n}"
                    counts[key] = count
                    seconds = peer_drain(dsn, peer, jobs=count, concurrency=n, batch_size=batch_size)
                    rates.setdefault(key, []).append(count / seconds)
    rows = []
    for n in concurrencies:
        best = max(PEERS, key=lambda peer: statistics.median(rates[(n, peer)]))
        base = statistics.median(rates[(n, best)])
        for who in ("Worker", *PEERS):
            key = (n, who)
            value = statistics.median(rates[key])
            target = ">= 3" if who == "Worker" else ""
            rows.append(
                Row(
                    "peers",
                    names[key],
                    "jobs/s",
                    value,
                    names[(n, best)],
                    value / base,
                    target,
                    counts[key],
                    tuple(rates[key]),
                )
            )
    return rows
