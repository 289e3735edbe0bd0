"""Per-key concurrency limits and fairness between keys, enforced in the claim itself.

A job may carry a ``concurrency_key`` (a customer, a tenant, an API account...). A claim with
``per_key=K`` takes a job only while fewer than K jobs of its key are running, and skips keys at
their limit instead of stopping at them (no head-of-line blocking: pg-boss#756). A claim with
``fair=True`` takes jobs round-robin across keys, keys served longest ago first, so one
tenant's 10,000 jobs do not starve another's 10. Both are one statement,
:data:`pgqueue_lab.sql.CLAIM_KEYED`; the plain claim (:data:`~pgqueue_lab.sql.CLAIM`) is used
whenever neither is asked for, and stays as fast as it was.

Counting running jobs and taking new ones must not interleave: two claims that both counted
K-1 running jobs would both take one. A statement sees only what had committed when it began,
so limited claims take turns on a transaction-level advisory lock
(:data:`~pgqueue_lab.sql.KEYED_CLAIM_LOCK`), one per queue schema; each counts after the
previous one committed. They are serialised, which costs throughput: use a limit where a
limit is the point. Fair claims without a limit need no lock (``SKIP LOCKED`` suffices).

The limit counts rows in ``running``, not handlers still executing: a cancelled job (its
handler has not looked at ``cancel_requested`` yet, or never does) and one whose handler
overran ``job_timeout`` (failed, or pending for a retry) are no longer ``running``, so a new
job of the key may start while the old handler still runs; for a moment K+1 handlers of a key
can be busy. A limit that protects an outside resource strictly
needs the handler to stop when asked, or its own guard.

Peers: River's ``ConcurrencyConfig`` (per-partition limits, a paid River Pro feature), Oban
Pro's partitioned ``global_limit``, graphile-worker's ``jobKey``/queue serialisation,
pg-boss's ``singletonKey``; fairness: Hatchet's round-robin ``GROUP_ROUND_ROBIN``.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from . import sql, validate

if TYPE_CHECKING:
    from .queue import Connection, Queue


def lock_key(schema: str) -> int:
    """The advisory lock key of one queue's limited claims: the first 8 bytes of a SHA-256 of
    the schema name, as a signed 64-bit integer (``pg_advisory_xact_lock(bigint)``)."""
    digest = hashlib.sha256(f"pgqueue_lab keyed claim {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def check_per_key(value: object) -> int:
    """Return ``value`` if it is a usable ``per_key``: an ``int`` from 1 to 2**31 - 1 (it is
    compared with counts in SQL as an ``integer``).

    :raises InvalidInputError: naming the value.
    """
    return validate.integer(validate.positive_int(value, "per_key"), "per_key")


def claim(
    queue: Queue, conn: Connection, params: dict[str, Any], per_key: int | None, fair: bool
) -> list[Any]:
    """Run :data:`pgqueue_lab.sql.CLAIM_KEYED` with the plain claim's ``params``; return its rows.

    :param per_key: at most this many running jobs per key (``None``: no limit).
    :param fair: round-robin across keys.
    :raises InvalidInputError: ``per_key`` is not an integer from 1 to 2**31 - 1, before
        anything is sent.
    """
    limit = None if per_key is None else check_per_key(per_key)
    keyed = {**params, "per_key": limit, "fair": bool(fair)}
    if limit is None:
        with queue._tx(conn):
            return conn.execute(queue._q(sql.CLAIM_KEYED), keyed).fetchall()
    with queue._tx(conn, statements=2):  # the lock is held until this transaction ends
        conn.execute(sql.KEYED_CLAIM_LOCK, {"lock": lock_key(queue.schema)})
        return conn.execute(queue._q(sql.CLAIM_KEYED), keyed).fetchall()
