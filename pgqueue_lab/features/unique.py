"""Unique jobs: at most one pending or running job per ``unique_key``.

``queue.enqueue(conn, "report", {...}, unique_key="report:acme:2026-11")`` inserts a job only
if no job with that key is pending or running; otherwise it returns the id of the job that is.
A completed, failed or cancelled job frees its key. The database decides, not the producer: a
partial unique index (:data:`CREATE_UNIQUE_INDEX`) and ``INSERT ... ON
CONFLICT DO NOTHING`` (:data:`ENQUEUE_UNIQUE`), so eight producers racing with
the same key still make one job. Peers: River's unique jobs, Oban's ``unique``, pg-boss's
``singletonKey``, procrastinate's ``queueing_lock``.

The key is held by the *row* while it is ``pending`` or ``running``, not by a handler still
executing: once a running job is cancelled, or failed because its handler overran
``job_timeout``, its key is free and a new job of that key may start while the old handler is
still running (Python cannot stop a thread; see :mod:`pgqueue_lab.features.cancel`); a retry of a
timed-out job likewise. A handler whose side effects must never overlap needs
its own guard (an advisory lock taken in the handler, say).

The statements are used only when a job has a ``unique_key`` or a ``concurrency_key``; the
plain :meth:`~pgqueue_lab.core.queue.Queue.enqueue` and ``enqueue_many`` paths are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg

from ..core import validate
from ..errors import InvalidInputError

if TYPE_CHECKING:
    from ..core.queue import Connection, NewJob, Queue


# -- statements (print one: ``print(unique.CREATE_UNIQUE_INDEX)``) -------------------------------

#: At most one pending or running job per unique key: a partial unique index, so a completed,
#: failed or cancelled job frees its key. Jobs without a key are not in it.
CREATE_UNIQUE_INDEX = """\
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique_idx
    ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')"""

#: Insert one job unless a pending or running job has the same ``unique_key``: then return that
#: job's id instead (``inserted`` false). ``ON CONFLICT`` waits for a concurrent insert of the
#: same key to commit or roll back, so two producers never both insert. When the job we
#: collided with committed after this statement began, its row is not visible to this
#: statement's snapshot and no row comes back: the caller runs the statement again.
ENQUEUE_UNIQUE = """\
WITH job AS (
    INSERT INTO {schema}.jobs (queue, type, payload, priority, run_at, max_attempts,
                               unique_key, concurrency_key)
    VALUES (%(queue)s, %(type)s, %(payload)s::jsonb, %(priority)s,
            now() + make_interval(secs => %(delay)s), %(max_attempts)s,
            %(unique_key)s, %(concurrency_key)s)
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')
    DO NOTHING
    RETURNING id, queue
), announced AS (
    SELECT pg_notify(%(channel)s, queue) FROM job
)
SELECT id, true AS inserted FROM job, (SELECT count(*) FROM announced) AS sent
UNION ALL
SELECT id, false FROM {schema}.jobs
WHERE unique_key = %(unique_key)s AND status IN ('pending', 'running')
  AND NOT EXISTS (SELECT 1 FROM job)"""

#: ``enqueue_many`` when a job of the batch has a ``unique_key`` or a ``concurrency_key``: one
#: row per job of the batch, in order, with its id (new, or the pending/running job that holds
#: its key; NULL if that job committed after this statement began: the caller retries it) and
#: whether it was inserted. Keyless jobs are inserted first, in batch order (so their identity
#: values follow it), keyed ones then in key order: concurrent batches wait for each other's
#: keys in one order, so they cannot deadlock. A key repeated in the batch is inserted once.
ENQUEUE_MANY_UNIQUE = """\
WITH batch AS (
    SELECT n, job, job->>'unique_key' AS unique_key,
           row_number() OVER (PARTITION BY job->>'unique_key' ORDER BY n) AS copy
    FROM jsonb_array_elements(%(jobs)s::jsonb) WITH ORDINALITY AS t(job, n)
), inserted AS (
    INSERT INTO {schema}.jobs (queue, type, payload, priority, run_at, max_attempts,
                               unique_key, concurrency_key)
    SELECT job->>'queue', job->>'type', job->'payload', (job->>'priority')::int,
           now() + make_interval(secs => (job->>'delay')::float8), (job->>'max_attempts')::int,
           unique_key, job->>'concurrency_key'
    FROM batch
    WHERE unique_key IS NULL OR copy = 1
    ORDER BY unique_key NULLS FIRST, n
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')
    DO NOTHING
    RETURNING id, queue, unique_key
), announced AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM inserted) AS q
), keyless AS (
    SELECT b.n, i.id
    FROM (SELECT n, row_number() OVER (ORDER BY n) AS k FROM batch WHERE unique_key IS NULL) AS b
    JOIN (SELECT id, row_number() OVER (ORDER BY id) AS k FROM inserted WHERE unique_key IS NULL) AS i
      USING (k)
)
SELECT b.n, coalesce(k.id, i.id, e.id) AS id, i.id IS NOT NULL AND b.copy = 1 AS inserted
FROM batch AS b
LEFT JOIN keyless AS k ON k.n = b.n
LEFT JOIN inserted AS i ON i.unique_key = b.unique_key
LEFT JOIN {schema}.jobs AS e
       ON e.unique_key = b.unique_key AND e.status IN ('pending', 'running') AND i.id IS NULL,
     (SELECT count(*) FROM announced) AS sent
ORDER BY b.n"""

T = TypeVar("T")

#: How many times a statement is run again when the job holding the key committed after the
#: statement began (so it neither inserted nor saw that job); each retry sees a newer snapshot.
RETRIES = 50

#: How many times an enqueue with keys is run again after PostgreSQL ended it to break a
#: deadlock: producers inserting the same keys at once (a batch and a single enqueue, say) can
#: wait for each other's uncommitted keys in a cycle. PostgreSQL rolls one back (its transaction,
#: or the savepoint the helper opened inside yours), and the helper runs it again.
DEADLOCK_RETRIES = 20


def keys(unique_key: object, concurrency_key: object, index: int | None) -> dict[str, str | None]:
    """Check a job's keys: each is ``None`` or a non-empty string of at most
    :data:`~pgqueue_lab.core.validate.MAX_KEY_LENGTH` characters (see :func:`pgqueue_lab.core.validate.key`).

    :raises InvalidInputError: naming the bad key (and the job of the batch).
    """
    where = "" if index is None else f" (job #{index} of the batch)"
    try:
        return {
            "unique_key": None if unique_key is None else validate.key(unique_key, what="unique_key"),
            "concurrency_key": None
            if concurrency_key is None
            else validate.key(concurrency_key, what="concurrency_key"),
        }
    except InvalidInputError as exc:
        raise InvalidInputError(f"{exc}{where}") from None


def enqueue_one(queue: Queue, conn: Connection, params: dict[str, Any], key: dict[str, str | None]) -> int:
    """Insert one job with keys, or return the id of the pending/running job holding its
    ``unique_key`` (:data:`ENQUEUE_UNIQUE`). ``params`` are checked, the payload
    already JSON text.

    :raises RuntimeError: the key changed hands more than :data:`RETRIES` times in a row (a
        producer racing with a worker that finishes such jobs at once, again and again).
    """
    statement = {**params, **key, "channel": queue.channel}

    def attempt() -> Any:
        with queue._tx(conn):
            return conn.execute(queue._q(ENQUEUE_UNIQUE), statement).fetchone()

    for _ in range(RETRIES):
        row = _retrying(attempt)
        if row is not None:
            return int(row[0])
    raise RuntimeError(f"could not enqueue or find the job with unique_key {key['unique_key']!r}")


def enqueue_many(
    queue: Queue, conn: Connection, jobs: Sequence[NewJob], rows: list[dict[str, Any]]
) -> list[int]:
    """``enqueue_many`` for a batch in which some job has a key: one statement
    (:data:`ENQUEUE_MANY_UNIQUE`), and one :func:`enqueue_one` per job whose key
    was taken by a job that committed after the statement began (rare). All in one transaction.
    Later copies of a key in that fallback reuse the id its first copy was given (by then that
    job may have finished, and a second :func:`enqueue_one` would make a new one).

    :returns: one id per job, in the order given; jobs repeating a key share its id.
    """
    batch = [
        {**row, **keys(job.unique_key, job.concurrency_key, i)}
        for i, (job, row) in enumerate(zip(jobs, rows, strict=True))
    ]
    params = {"jobs": validate.batch_json(batch), "channel": queue.channel}

    def attempt() -> list[int]:
        with queue._tx(conn, statements=2):
            found = conn.execute(queue._q(ENQUEUE_MANY_UNIQUE), params).fetchall()
            ids: list[int | None] = [None if i is None else int(i) for _, i, _ in found]
            resolved: dict[str, int] = {}  # unique_key -> the id its first copy was given
            for n, job_id in enumerate(ids):
                if job_id is None:
                    row = batch[n]
                    if row["unique_key"] in resolved:  # a later copy shares the first one's id
                        ids[n] = resolved[row["unique_key"]]
                        continue
                    key = {"unique_key": row["unique_key"], "concurrency_key": row["concurrency_key"]}
                    checked = {**row, "payload": validate.payload_json(row["payload"])}
                    ids[n] = resolved[row["unique_key"]] = enqueue_one(queue, conn, checked, key)
        return [int(i) for i in ids if i is not None]

    return _retrying(attempt)


def _retrying(attempt: Callable[[], T]) -> T:
    """Run ``attempt`` (one statement, transaction or savepoint) again when PostgreSQL ended it to
    break a deadlock, up to :data:`DEADLOCK_RETRIES` times."""
    for _ in range(DEADLOCK_RETRIES):
        try:
            return attempt()
        except psycopg.errors.DeadlockDetected:
            continue
    return attempt()


def enqueue_keyed(
    queue: Queue, conn: Connection, params: dict[str, Any], unique_key: object, concurrency_key: object
) -> int:
    """:meth:`Queue.enqueue <pgqueue_lab.core.queue.Queue.enqueue>` for a job with a key (the
    queue's extension point :attr:`~pgqueue_lab.core.queue.QueueExtensions.enqueue`): check the
    keys, then :func:`enqueue_one`.

    :raises InvalidInputError: naming the bad key, before anything is sent.
    """
    return enqueue_one(queue, conn, params, keys(unique_key, concurrency_key, None))
