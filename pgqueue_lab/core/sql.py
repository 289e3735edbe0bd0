"""The queue's SQL, every statement as a named constant, in the order the course meets them.

Print any of them in a notebook (``print(sql.CLAIM)``). ``{schema}`` is filled in with
``psycopg.sql.Identifier`` (see :func:`compose`); ``%(name)s`` placeholders are query
parameters, sent separately from the SQL, never pasted into it.

These are the core's statements (notebooks 00-12): the table and its indexes, enqueue, claim,
complete, fail, release, heartbeat, rescue, the dead letters, waiting and looking. Each feature
keeps its own statements beside its code (``pgqueue_lab.features.unique.ENQUEUE_UNIQUE``,
``pgqueue_lab.features.limits.CLAIM_KEYED``...), and so do the tools (``WATCH_*``,
``CLASSROOM_*``).
"""

from __future__ import annotations

from collections.abc import Mapping

from psycopg import sql as _sql

#: The job states, in lifecycle order. The table's CHECK constraint enforces them.
#: ``cancelled`` is final, like ``completed`` and ``failed`` (see :mod:`pgqueue_lab.features.cancel`).
STATUSES = ("pending", "running", "completed", "failed", "cancelled")

CREATE_SCHEMA = "CREATE SCHEMA IF NOT EXISTS {schema}"

#: The jobs table. Each column is explained in notebook 01.
CREATE_TABLE = """\
CREATE TABLE IF NOT EXISTS {schema}.jobs (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue        text        NOT NULL DEFAULT 'default' CHECK (queue <> ''),
    type         text        NOT NULL CHECK (type <> ''),
    payload      jsonb       NOT NULL DEFAULT jsonb_build_object(),
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    priority     integer     NOT NULL DEFAULT 0,
    run_at       timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    max_attempts integer     NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    last_error   text,
    errors       jsonb       NOT NULL DEFAULT jsonb_build_array(),
    worker_id    text,
    claim_token  uuid,
    locked_until timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
)"""

#: A partial index holding only pending jobs, in the order the claim takes them.
CREATE_CLAIM_INDEX = """\
CREATE INDEX IF NOT EXISTS jobs_claim_idx
    ON {schema}.jobs (priority DESC, run_at, id)
    WHERE status = 'pending'"""

#: A partial index holding only running jobs, by lease expiry: finds abandoned jobs quickly.
CREATE_LEASE_INDEX = """\
CREATE INDEX IF NOT EXISTS jobs_lease_idx
    ON {schema}.jobs (locked_until)
    WHERE status = 'running'"""

#: The columns of the optional features: a key that makes a job unique while it is pending or
#: running, a key whose running jobs are limited (a customer, a tenant), and when a job was
#: cancelled. ``ADD COLUMN ... IF NOT EXISTS`` upgrades a queue made by an older version.
CREATE_FEATURE_COLUMNS = """\
ALTER TABLE {schema}.jobs
    ADD COLUMN IF NOT EXISTS unique_key      text CHECK (unique_key <> ''),
    ADD COLUMN IF NOT EXISTS concurrency_key text CHECK (concurrency_key <> ''),
    ADD COLUMN IF NOT EXISTS cancelled_at    timestamptz"""

#: Named queues whose jobs no worker claims until they are resumed.
CREATE_PAUSED_TABLE = """\
CREATE TABLE IF NOT EXISTS {schema}.paused_queues (
    queue     text        PRIMARY KEY CHECK (queue <> ''),
    paused_at timestamptz NOT NULL DEFAULT now()
)"""

#: Statistics for that table from the start: one never analysed is planned as ten pages of rows,
#: and a claim written with ``NOT EXISTS`` then sorts the whole queue (notebook 14).
ANALYZE_PAUSED_TABLE = "ANALYZE {schema}.paused_queues"

DROP_SCHEMA = "DROP SCHEMA IF EXISTS {schema} CASCADE"

#: Insert one job and announce it, in one statement (so one transaction).
#: ``pg_notify`` is delivered only when the transaction commits.
ENQUEUE = """\
WITH job AS (
    INSERT INTO {schema}.jobs (queue, type, payload, priority, run_at, max_attempts)
    VALUES (%(queue)s, %(type)s, %(payload)s::jsonb, %(priority)s,
            now() + make_interval(secs => %(delay)s), %(max_attempts)s)
    RETURNING id, queue
)
SELECT id, pg_notify(%(channel)s, queue) FROM job"""

#: ENQUEUE without the announcement (``enqueue(..., notify=False)``): polling workers find the
#: job, and the commit takes no server-wide NOTIFY lock.
ENQUEUE_QUIET = """\
INSERT INTO {schema}.jobs (queue, type, payload, priority, run_at, max_attempts)
VALUES (%(queue)s, %(type)s, %(payload)s::jsonb, %(priority)s,
        now() + make_interval(secs => %(delay)s), %(max_attempts)s)
RETURNING id"""

#: Insert many jobs in one round trip: the whole batch arrives as one JSON array parameter,
#: unpacked row by row in the database (``WITH ORDINALITY`` keeps the given order), and each
#: queue that got jobs is announced once.
ENQUEUE_MANY = """\
WITH batch AS (
    INSERT INTO {schema}.jobs (queue, type, payload, priority, run_at, max_attempts)
    SELECT job->>'queue', job->>'type', job->'payload', (job->>'priority')::int,
           now() + make_interval(secs => (job->>'delay')::float8), (job->>'max_attempts')::int
    FROM jsonb_array_elements(%(jobs)s::jsonb) WITH ORDINALITY AS t(job, n)
    ORDER BY n
    RETURNING id, queue
), announced AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM batch) AS q
)
SELECT id FROM batch, (SELECT count(*) FROM announced) AS sent ORDER BY id"""

#: ENQUEUE_MANY without the announcement (``enqueue_many(..., notify=False)``). Keep the two in
#: step: only the ``announced`` part differs.
ENQUEUE_MANY_QUIET = """\
INSERT INTO {schema}.jobs (queue, type, payload, priority, run_at, max_attempts)
SELECT job->>'queue', job->>'type', job->'payload', (job->>'priority')::int,
       now() + make_interval(secs => (job->>'delay')::float8), (job->>'max_attempts')::int
FROM jsonb_array_elements(%(jobs)s::jsonb) WITH ORDINALITY AS t(job, n)
ORDER BY n
RETURNING id"""

#: Claim up to ``limit`` jobs atomically, in one statement.
#: ``FOR UPDATE SKIP LOCKED`` makes concurrent workers skip rows another worker has locked,
#: instead of waiting for them or taking them twice. The claim stores a fresh random
#: ``claim_token`` (one per claim, made by :meth:`~pgqueue_lab.core.queue.Queue.claim`) on every job
#: it takes: every later write of this run (complete, fail, heartbeat, release) must present
#: it, so a run whose lease lapsed, and whose job was rescued, can change nothing.
#: Jobs of a paused queue (:mod:`pgqueue_lab.features.pause`) are left alone. ``NOT IN``, not ``NOT
#: EXISTS``: the planner turns ``NOT EXISTS`` into an anti-join and, misjudging how many jobs a
#: tiny table removes, sorted the whole queue instead of reading the claim index in order;
#: ``NOT IN`` stays a hashed subplan, read once per claim (``queue`` is ``NOT NULL``, so
#: ``NOT IN`` has no NULL surprise).
CLAIM = """\
WITH next AS (
    SELECT id
    FROM {schema}.jobs
    WHERE status = 'pending'
      AND run_at <= now()
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
      AND queue NOT IN (SELECT queue FROM {schema}.paused_queues)
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
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
    RETURNING j.id, j.queue, j.type, j.payload, j.priority, j.run_at, j.attempts, j.max_attempts
)
SELECT id, queue, type, payload, attempts, max_attempts
FROM claimed
ORDER BY priority DESC, run_at, id"""

#: Mark running jobs of one claim completed (a whole batch in one statement). Fenced: a job is
#: changed only while it is still ``running`` under the claim token this run was given.
COMPLETE = """\
UPDATE {schema}.jobs
SET status = 'completed', finished_at = now(), locked_until = NULL
WHERE id = ANY(%(ids)s) AND status = 'running' AND claim_token = %(token)s
RETURNING id"""

#: Record a failure (fenced by the claim token, like COMPLETE). With attempts left the job goes
#: back to ``pending`` after an exponential backoff computed on the database clock:
#: ``retry_delay * 2^(attempts-1)`` times a random 0.9-1.1 (*jitter*), but at most a random
#: 90-100 % of ``max_delay``, so no wait exceeds ``max_delay`` and capped waits still differ.
#: The exponent stops growing at 100, so the arithmetic cannot overflow. The retry is announced
#: (NOTIFY), so an idle worker wakes up for it. After its last attempt, or at once if ``retry``
#: is false (a permanent error), the job stays ``failed``, the dead-letter state. Every error
#: is appended to ``errors``.
FAIL = """\
WITH failed AS (
    UPDATE {schema}.jobs
    SET status       = CASE WHEN %(retry)s AND attempts < max_attempts THEN 'pending' ELSE 'failed' END,
        run_at       = CASE WHEN %(retry)s AND attempts < max_attempts
                            THEN now() + make_interval(secs => least(
                                %(retry_delay)s * power(2, least(attempts - 1, 100)) * (0.9 + 0.2 * random()),
                                %(max_delay)s * (0.9 + 0.1 * random())))
                            ELSE run_at END,
        finished_at  = CASE WHEN %(retry)s AND attempts < max_attempts THEN NULL ELSE now() END,
        last_error   = %(error)s,
        errors       = errors || jsonb_build_array(
                           jsonb_build_object('attempt', attempts, 'error', %(error)s::text)),
        locked_until = NULL
    WHERE id = %(id)s AND status = 'running' AND claim_token = %(token)s
    RETURNING status, queue
), announced AS (
    SELECT pg_notify(%(channel)s, queue) FROM failed WHERE status = 'pending'
)
SELECT status FROM failed, (SELECT count(*) FROM announced) AS sent"""

#: Put claimed-but-unstarted jobs back (a worker stopping gracefully), not counting the attempt,
#: and announce them so another worker takes them at once. Fenced by the claim token: a worker
#: that lost a job (its lease lapsed and the job was rescued) cannot un-claim it from the
#: worker running it now.
RELEASE = """\
WITH released AS (
    UPDATE {schema}.jobs
    SET status = 'pending', attempts = attempts - 1, worker_id = NULL, claim_token = NULL,
        started_at = NULL, locked_until = NULL
    WHERE id = ANY(%(ids)s) AND status = 'running' AND claim_token = %(token)s
    RETURNING id, queue
), announced AS (
    SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM released) AS q
)
SELECT id FROM released, (SELECT count(*) FROM announced) AS sent ORDER BY id"""

#: A live worker extends the lease of the jobs of one claim (its heartbeat). Returns the ids
#: renewed: a missing one was rescued from this run (its lease lapsed) and must not be started.
#: ``SKIP LOCKED``: a row locked by a statement still running (this worker's own slow write of
#: its outcome, say) is skipped, not waited for, so one slow row cannot hold up the heartbeat of
#: the others; while it stays locked, no rescue can take it either. A row locked by another
#: transaction is skipped too: :data:`HELD` then tells the worker it is still its own.
HEARTBEAT = """\
WITH mine AS (
    SELECT id FROM {schema}.jobs
    WHERE id = ANY(%(ids)s) AND status = 'running' AND claim_token = %(token)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.jobs AS j
SET locked_until = now() + make_interval(secs => %(lease)s)
FROM mine
WHERE j.id = mine.id
RETURNING j.id"""

#: Which of one claim's jobs it still holds, by a plain read that waits for no lock. Asked
#: about the jobs a heartbeat did not renew: a row another transaction has locked (an admin's
#: ``SELECT ... FOR UPDATE``, a cancel not yet committed) was skipped, not taken from this run.
HELD = """\
SELECT id FROM {schema}.jobs
WHERE id = ANY(%(ids)s) AND status = 'running' AND claim_token = %(token)s
ORDER BY id"""

#: Rescue jobs whose lease expired: their worker crashed, hung or lost its connection.
#: The lost run counts as an attempt: with attempts left the job is pending again at once (and
#: announced), otherwise it is failed. Clearing ``claim_token`` fences the lost run out: its
#: late complete, fail, heartbeat or release finds no row with its token.
RESCUE = """\
WITH rescued AS (
    UPDATE {schema}.jobs AS j
    SET status       = CASE WHEN j.attempts < j.max_attempts THEN 'pending' ELSE 'failed' END,
        run_at       = now(),
        finished_at  = CASE WHEN j.attempts < j.max_attempts THEN NULL ELSE now() END,
        last_error   = lost.error,
        errors       = j.errors || jsonb_build_array(
                           jsonb_build_object('attempt', j.attempts, 'error', lost.error)),
        worker_id    = NULL,
        claim_token  = NULL,
        locked_until = NULL
    FROM (
        SELECT id, 'lease expired: worker ' || coalesce(worker_id, '?') || ' stopped responding' AS error
        FROM {schema}.jobs
        WHERE status = 'running' AND locked_until < now()
          AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s))
        FOR UPDATE SKIP LOCKED
    ) AS lost
    WHERE j.id = lost.id
    RETURNING j.id, j.status, j.queue
), announced AS (
    SELECT pg_notify(%(channel)s, queue)
    FROM (SELECT DISTINCT queue FROM rescued WHERE status = 'pending') AS q
)
SELECT id, status FROM rescued, (SELECT count(*) FROM announced) AS sent ORDER BY id"""

#: Running jobs whose lease expired: what RESCUE takes. A worker whose rescue of them all was
#: refused (a trigger, a timeout) rescues them one by one, so one bad row blocks no other.
EXPIRED = """\
SELECT id FROM {schema}.jobs
WHERE status = 'running' AND locked_until < now()
ORDER BY id"""

#: Reclaim the dead rows that every claim and completion leaves behind. A busy queue makes them
#: faster than autovacuum (which visits a database once a minute) removes them, and the claim
#: slows down as it steps over them. ``SKIP_LOCKED`` skips the table if vacuum already runs.
VACUUM_JOBS = "VACUUM (SKIP_LOCKED) {schema}.jobs"

#: Seconds until the next pending job (of a queue not paused) is due (negative if overdue, NULL if
#: none is pending):
#: an idle worker sleeps no longer than this, so a scheduled job starts on time. With
#: ``future_only`` only jobs not yet due count: a worker whose claim found nothing although a
#: job is due knows that job is locked by someone else, and waits for the next one instead.
NEXT_DUE = """\
SELECT extract(epoch FROM min(run_at) - now())::float8
FROM {schema}.jobs
WHERE status = 'pending'
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
  AND queue NOT IN (SELECT queue FROM {schema}.paused_queues)
  AND (NOT %(future_only)s OR run_at > now())"""

#: Is any job still pending or running? (A draining worker stops when not.) Pending jobs of a
#: paused queue do not count: a draining worker does not wait for a queue nobody resumes.
HAS_WORK = """\
SELECT EXISTS (
    SELECT 1 FROM {schema}.jobs
    WHERE (status = 'running'
           OR status = 'pending' AND queue NOT IN (SELECT queue FROM {schema}.paused_queues))
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
)"""

#: The dead letters: jobs that used up their attempts, with their error history.
DEAD_LETTERS = """\
SELECT id, queue, type, payload, attempts, max_attempts, last_error, errors
FROM {schema}.jobs
WHERE status = 'failed'
ORDER BY id"""

#: Give failed jobs a fresh set of attempts (after fixing what made them fail), and announce them.
REQUEUE = """\
WITH requeued AS (
    UPDATE {schema}.jobs
    SET status = 'pending', attempts = 0, run_at = now(), finished_at = NULL,
        worker_id = NULL, claim_token = NULL, locked_until = NULL
    WHERE id = ANY(%(ids)s) AND status = 'failed'
    RETURNING id, queue
)
SELECT id, pg_notify(%(channel)s, queue) FROM requeued ORDER BY id"""

#: :data:`REQUEUE` when it broke the unique index (issue 12): requeue the failed jobs except
#: those whose ``unique_key`` is held (by a pending or running job, or by a failed job of the
#: same call with a lower id): they stay failed, as a key allows one live job. Each row says
#: whether its job was requeued.
REQUEUE_SKIP_HELD = """\
WITH asked AS (
    SELECT f.id,
           f.unique_key IS NOT NULL AND (
               f.id <> min(f.id) OVER (PARTITION BY f.unique_key)
               OR EXISTS (SELECT 1 FROM {schema}.jobs AS l
                          WHERE l.unique_key = f.unique_key AND l.status IN ('pending', 'running'))
           ) AS held
    FROM {schema}.jobs AS f
    WHERE f.id = ANY(%(ids)s) AND f.status = 'failed'
), requeued AS (
    UPDATE {schema}.jobs AS j
    SET status = 'pending', attempts = 0, run_at = now(), finished_at = NULL,
        worker_id = NULL, claim_token = NULL, locked_until = NULL
    FROM asked AS a
    WHERE j.id = a.id AND NOT a.held AND j.status = 'failed'
    RETURNING j.id, j.queue
), announced AS (
    SELECT pg_notify(%(channel)s, queue) FROM requeued
)
SELECT id, true AS requeued FROM requeued, (SELECT count(*) FROM announced) AS sent
UNION ALL
SELECT id, false FROM asked WHERE held
ORDER BY id"""

#: How many jobs are in each state (every state listed, zero included).
STATUS_COUNTS = """\
SELECT s.status, count(j.id) AS jobs
FROM unnest(%(statuses)s::text[]) WITH ORDINALITY AS s(status, n)
LEFT JOIN {schema}.jobs AS j ON j.status = s.status
GROUP BY s.status, s.n
ORDER BY s.n"""

#: Every job, oldest first.
LIST_JOBS = """\
SELECT id, queue, type, payload, status, priority, attempts, max_attempts, last_error,
       worker_id, created_at, started_at, finished_at
FROM {schema}.jobs
ORDER BY id"""

LISTEN = "LISTEN {channel}"
UNLISTEN = "UNLISTEN {channel}"


def compose(statement: str, schema: str, **identifiers: str) -> _sql.Composed:
    """Fill ``{schema}`` (and any other ``{name}``) with quoted identifiers.

    :param statement: one of the constants above.
    :param schema: the schema name, already validated.
    """
    names = {key: _sql.Identifier(value) for key, value in identifiers.items()}
    return _sql.SQL(statement).format(schema=_sql.Identifier(schema), **names)


def compose_utility(
    statement: str, *, literals: Mapping[str, object] | None = None, **identifiers: str
) -> _sql.Composed:
    """Fill the ``{name}`` placeholders of a statement that takes no parameters (``CREATE ROLE``,
    ``COMMENT ON``...): identifiers (``role="student01"``) quoted by ``psycopg.sql.Identifier``,
    values (``literals={"limit": 16}``) by ``psycopg.sql.Literal``.
    """
    names: dict[str, _sql.Composable] = {key: _sql.Identifier(value) for key, value in identifiers.items()}
    names.update({key: _sql.Literal(value) for key, value in (literals or {}).items()})
    return _sql.SQL(statement).format(**names)
