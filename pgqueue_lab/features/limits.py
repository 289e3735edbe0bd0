"""Per-key concurrency limits and fairness between keys, enforced in the claim itself.

A job may carry a ``concurrency_key`` (a customer, a tenant, an API account...). A claim with
``per_key=K`` takes a job only while fewer than K jobs of its key are running, and skips keys at
their limit instead of stopping at them (no head-of-line blocking: pg-boss#756). A claim with
``fair=True`` takes jobs round-robin across keys, keys served longest ago first, so one
tenant's 10,000 jobs do not starve another's 10. Both are one statement,
:data:`CLAIM_KEYED`; the plain claim (:data:`~pgqueue_lab.core.sql.CLAIM`) is used
whenever neither is asked for, and stays as fast as it was.

Counting running jobs and taking new ones must not interleave: two claims that both counted
K-1 running jobs would both take one. A statement sees only what had committed when it began,
so limited claims take turns on a transaction-level advisory lock
(:data:`KEYED_CLAIM_LOCK`), one per queue schema; each counts after the
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

from ..core import validate

if TYPE_CHECKING:
    from ..core.queue import Connection, Queue


# -- statements (print one: ``print(limits.CREATE_KEY_TURNS_TABLE)``) ----------------------------

#: When the fair claim last served each concurrency key ('' for jobs without one).
CREATE_KEY_TURNS_TABLE = """\
CREATE TABLE IF NOT EXISTS {schema}.key_turns (
    concurrency_key text        PRIMARY KEY,
    served_at       timestamptz NOT NULL
)"""

#: Statistics for that table from the start (an empty table never analysed is planned as ten
#: pages of rows): the keyed claim joins it.
ANALYZE_KEY_TURNS = "ANALYZE {schema}.key_turns"

#: Limited claims of one queue take turns: this transaction-level advisory lock is held until
#: the claim commits, so the next limited claim counts the running jobs the previous one made.
#: ``lock`` is a 64-bit key derived from the schema name (:func:`pgqueue_lab.features.limits.lock_key`).
KEYED_CLAIM_LOCK = "SELECT pg_advisory_xact_lock(%(lock)s)"

#: The claim with per-key limits and/or fairness (only used when one of them is asked for).
#: ``turn`` numbers each key's due jobs in claim order (1 = its next job). With ``per_key`` a
#: job is taken only if its key's running jobs plus its turn stay within the limit, so a key at
#: its limit is skipped and the jobs of other keys behind it are taken (no head-of-line
#: blocking); jobs without a key are not limited. With ``fair`` the batch takes every key's
#: first job, then every key's second..., keys served longest ago (``key_turns``) first, so a
#: key with 10,000 jobs does not starve a key with 10. Counting every due job costs time in
#: proportion to the backlog: a price paid only by queues that use these modes. The keys served
#: are recorded in key order, so concurrent fair claims lock ``key_turns`` rows in one order
#: (no deadlock).
CLAIM_KEYED = """\
WITH busy AS (
    SELECT concurrency_key, count(*) AS running
    FROM {schema}.jobs
    WHERE status = 'running' AND concurrency_key IS NOT NULL
    GROUP BY concurrency_key
), ranked AS (
    SELECT j.id, j.priority, j.run_at, coalesce(b.running, 0) AS running,
           j.concurrency_key IS NULL AS unlimited, t.served_at,
           row_number() OVER (PARTITION BY j.concurrency_key
                              ORDER BY j.priority DESC, j.run_at, j.id) AS turn
    FROM {schema}.jobs AS j
    LEFT JOIN busy AS b ON b.concurrency_key = j.concurrency_key
    LEFT JOIN {schema}.key_turns AS t ON t.concurrency_key = coalesce(j.concurrency_key, '')
    WHERE j.status = 'pending'
      AND j.run_at <= now()
      AND (%(queues)s::text[] IS NULL OR j.queue = ANY(%(queues)s::text[]))
      AND j.queue NOT IN (SELECT queue FROM {schema}.paused_queues)
), next AS (
    SELECT j.id
    FROM {schema}.jobs AS j
    JOIN ranked AS r ON r.id = j.id
    WHERE j.status = 'pending'
      AND (%(per_key)s::int IS NULL OR r.unlimited OR r.running + r.turn <= %(per_key)s)
    ORDER BY CASE WHEN %(fair)s THEN r.turn END,
             CASE WHEN %(fair)s THEN r.served_at END NULLS FIRST,
             r.priority DESC, r.run_at, r.id
    LIMIT %(limit)s
    FOR UPDATE OF j SKIP LOCKED
), claimed AS (
    UPDATE {schema}.jobs AS j
    SET status = 'running',
        attempts = j.attempts + 1,
        worker_id = %(worker_id)s,
        claim_token = %(token)s,
        started_at = now(),
        finished_at = NULL,
        locked_until = now() + make_interval(secs => %(lease)s)
    FROM next
    WHERE j.id = next.id
    RETURNING j.id, j.queue, j.type, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts,
              j.concurrency_key
), served AS (
    INSERT INTO {schema}.key_turns (concurrency_key, served_at)
    SELECT k, clock_timestamp()
    FROM (SELECT DISTINCT coalesce(concurrency_key, '') AS k FROM claimed WHERE %(fair)s) AS s
    ORDER BY k
    ON CONFLICT (concurrency_key) DO UPDATE SET served_at = EXCLUDED.served_at
)
SELECT id, queue, type, payload, attempts, max_attempts
FROM claimed
ORDER BY priority DESC, run_at, id"""


def lock_key(schema: str) -> int:
    """The advisory lock key of one queue's limited claims: the first 8 bytes of a SHA-256 of
    the schema name, as a signed 64-bit integer (``pg_advisory_xact_lock(bigint)``)."""
    digest = hashlib.sha256(f"pgqueue_lab keyed claim {schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def claim(
    queue: Queue, conn: Connection, params: dict[str, Any], per_key: int | None, fair: bool
) -> list[Any]:
    """Run :data:`CLAIM_KEYED` with the plain claim's ``params``; return its rows.

    :param per_key: at most this many running jobs per key (``None``: no limit).
    :param fair: round-robin across keys.
    :raises InvalidInputError: ``per_key`` is not an integer from 1 to 2**31 - 1, before
        anything is sent.
    """
    limit = None if per_key is None else validate.per_key(per_key)
    keyed = {**params, "per_key": limit, "fair": bool(fair)}
    if limit is None:
        with queue._tx(conn):
            return conn.execute(queue._q(CLAIM_KEYED), keyed).fetchall()
    with queue._tx(conn, statements=2):  # the lock is held until this transaction ends
        conn.execute(KEYED_CLAIM_LOCK, {"lock": lock_key(queue.schema)})
        return conn.execute(queue._q(CLAIM_KEYED), keyed).fetchall()
