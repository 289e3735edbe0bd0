"""Every SQL statement of the queue, in one place, as named constants.

Print any of them in a notebook (``print(sql.CLAIM)``). ``{schema}`` is filled in with
``psycopg.sql.Identifier`` (see :func:`compose`); ``%(name)s`` placeholders are query
parameters, sent separately from the SQL, never pasted into it.

After the queue's own statements come those of the live view (``WATCH_*``, used by
:mod:`pgqueue_lab.watch`) and of the classroom (``CLASSROOM_*``, :mod:`pgqueue_lab.classroom`).
"""

from __future__ import annotations

from collections.abc import Mapping

from psycopg import sql as _sql

#: The job states, in lifecycle order. The table's CHECK constraint enforces them.
#: ``cancelled`` is final, like ``completed`` and ``failed`` (see :mod:`pgqueue_lab.cancel`).
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

#: Claim up to ``limit`` jobs atomically, in one statement.
#: ``FOR UPDATE SKIP LOCKED`` makes concurrent workers skip rows another worker has locked,
#: instead of waiting for them or taking them twice. The claim stores a fresh random
#: ``claim_token`` (one per claim, made by :meth:`~pgqueue_lab.queue.Queue.claim`) on every job
#: it takes: every later write of this run (complete, fail, heartbeat, release) must present
#: it, so a run whose lease lapsed, and whose job was rescued, can change nothing.
#: Jobs of a paused queue (:mod:`pgqueue_lab.pause`) are left alone. ``NOT IN``, not ``NOT
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

# -- unique jobs, cancellation, pausing, per-key limits, schedules (issue 12) ------------------
#
# Each feature's columns and tables come with Queue.create() (idempotent, so an older queue
# gains them too). The plain claim above only checks the small paused_queues table; the
# statements below are used only when a feature is asked for.

#: The columns of the optional features: a key that makes a job unique while it is pending or
#: running, a key whose running jobs are limited (a customer, a tenant), and when a job was
#: cancelled. ``ADD COLUMN ... IF NOT EXISTS`` upgrades a queue made by an older version.
CREATE_FEATURE_COLUMNS = """\
ALTER TABLE {schema}.jobs
    ADD COLUMN IF NOT EXISTS unique_key      text CHECK (unique_key <> ''),
    ADD COLUMN IF NOT EXISTS concurrency_key text CHECK (concurrency_key <> ''),
    ADD COLUMN IF NOT EXISTS cancelled_at    timestamptz"""

#: At most one pending or running job per unique key: a partial unique index, so a completed,
#: failed or cancelled job frees its key. Jobs without a key are not in it.
CREATE_UNIQUE_INDEX = """\
CREATE UNIQUE INDEX IF NOT EXISTS jobs_unique_idx
    ON {schema}.jobs (unique_key)
    WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')"""

#: Named queues whose jobs no worker claims until they are resumed.
CREATE_PAUSED_TABLE = """\
CREATE TABLE IF NOT EXISTS {schema}.paused_queues (
    queue     text        PRIMARY KEY CHECK (queue <> ''),
    paused_at timestamptz NOT NULL DEFAULT now()
)"""

#: When the fair claim last served each concurrency key ('' for jobs without one).
CREATE_KEY_TURNS_TABLE = """\
CREATE TABLE IF NOT EXISTS {schema}.key_turns (
    concurrency_key text        PRIMARY KEY,
    served_at       timestamptz NOT NULL
)"""

#: Periodic jobs: a cron expression or an interval in seconds (exactly one), and the last tick
#: that enqueued a job. A tick is enqueued by whichever scheduler moves ``last_tick`` forward.
CREATE_SCHEDULES_TABLE = """\
CREATE TABLE IF NOT EXISTS {schema}.schedules (
    name       text        PRIMARY KEY CHECK (name <> ''),
    type       text        NOT NULL CHECK (type <> ''),
    payload    jsonb       NOT NULL DEFAULT jsonb_build_object(),
    queue      text        NOT NULL DEFAULT 'default' CHECK (queue <> ''),
    cron       text,
    every      float8      CHECK (every > 0),
    last_tick  timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every IS NULL))
)"""

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

#: Cancel jobs: a pending one is ``cancelled`` at once; a running one is ``cancelled`` too, and
#: its worker is told (NOTIFY on the cancel channel, the job id as payload) so its handler can
#: stop (``job.cancel_requested``). Its claim token and ``status = 'running'`` checks then make
#: its late complete, fail, heartbeat or release change nothing. ``FOR UPDATE`` waits for a
#: claim racing with it and reads the row again, so a job is never missed between the states.
CANCEL = """\
WITH cancelled AS (
    UPDATE {schema}.jobs AS j
    SET status = 'cancelled', cancelled_at = now(), finished_at = now(), locked_until = NULL
    FROM (
        SELECT id, status AS was FROM {schema}.jobs
        WHERE id = ANY(%(ids)s) AND status IN ('pending', 'running')
        ORDER BY id
        FOR UPDATE
    ) AS old
    WHERE j.id = old.id
    RETURNING j.id, old.was
), told AS (
    SELECT pg_notify(%(channel)s, id::text) FROM cancelled WHERE was = 'running'
)
SELECT id, was FROM cancelled, (SELECT count(*) FROM told) AS sent ORDER BY id"""

#: Of these jobs (a worker's running ones), those cancelled: the worker's polling fallback for a
#: lost cancel notification.
CANCELLED_AMONG = """\
SELECT id FROM {schema}.jobs
WHERE id = ANY(%(ids)s) AND status = 'cancelled'
ORDER BY id"""

#: Pause a named queue: no claim takes its jobs until it is resumed. Jobs already claimed run on.
PAUSE = """\
INSERT INTO {schema}.paused_queues (queue) VALUES (%(queue)s)
ON CONFLICT (queue) DO NOTHING
RETURNING queue"""

#: Resume a paused queue, and announce it (payload: the queue name) so idle workers look at once.
RESUME = """\
WITH resumed AS (
    DELETE FROM {schema}.paused_queues WHERE queue = %(queue)s RETURNING queue
)
SELECT queue, pg_notify(%(channel)s, queue) FROM resumed"""

#: The paused queues, by name.
PAUSED = "SELECT queue FROM {schema}.paused_queues ORDER BY queue"

#: Limited claims of one queue take turns: this transaction-level advisory lock is held until
#: the claim commits, so the next limited claim counts the running jobs the previous one made.
#: ``lock`` is a 64-bit key derived from the schema name (:func:`pgqueue_lab.limits.lock_key`).
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

#: Add a schedule, or change one (its ``last_tick`` is kept, so a change never repeats a tick).
SCHEDULE_UPSERT = """\
INSERT INTO {schema}.schedules (name, type, payload, queue, cron, every)
VALUES (%(name)s, %(type)s, %(payload)s::jsonb, %(queue)s, %(cron)s, %(every)s)
ON CONFLICT (name) DO UPDATE
SET type = EXCLUDED.type, payload = EXCLUDED.payload, queue = EXCLUDED.queue,
    cron = EXCLUDED.cron, every = EXCLUDED.every
RETURNING name"""

SCHEDULE_DELETE = "DELETE FROM {schema}.schedules WHERE name = %(name)s RETURNING name"

#: Every schedule, with the database clock's time (every scheduler decides on the same clock).
SCHEDULES = """\
SELECT name, type, payload, queue, cron, every, last_tick, created_at, now() AS db_now
FROM {schema}.schedules
ORDER BY name"""

#: Enqueue one tick of one schedule, exactly once however many schedulers try: the UPDATE moves
#: ``last_tick`` forward only if it is behind this tick (a second scheduler waits for the first's
#: row lock, re-reads the row, and finds it moved); the job also gets the tick's unique key.
SCHEDULE_FIRE = """\
WITH advanced AS (
    UPDATE {schema}.schedules
    SET last_tick = %(tick)s
    WHERE name = %(name)s AND (last_tick IS NULL OR last_tick < %(tick)s)
    RETURNING name, type, payload, queue
), job AS (
    INSERT INTO {schema}.jobs (queue, type, payload, unique_key)
    SELECT queue, type, payload, %(unique_key)s FROM advanced
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND status IN ('pending', 'running')
    DO NOTHING
    RETURNING id, queue
)
SELECT id, pg_notify(%(channel)s, queue) FROM job"""

# -- watching a queue live (pgqueue-lab watch, pgqueue_lab.watch) ------------------------------

#: Per worker (the ``worker_id`` without its thread number: ``worker-a-2`` counts for
#: ``worker-a``): jobs it completed, how many of them in the last ``window`` seconds (the
#: rate), and what it holds or failed now.
WATCH_WORKERS = """\
SELECT regexp_replace(worker_id, '-[0-9]+$', '') AS worker,
       count(*) FILTER (WHERE status = 'completed') AS completed,
       count(*) FILTER (WHERE status = 'completed'
                          AND finished_at > now() - make_interval(secs => %(window)s)) AS recent,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'failed') AS failed
FROM {schema}.jobs
WHERE worker_id IS NOT NULL
GROUP BY 1
ORDER BY 1"""

#: The pending job that has waited longest since it was enqueued (scheduled ones included).
WATCH_OLDEST_PENDING = """\
SELECT id, type, extract(epoch FROM now() - created_at)::float8 AS age, run_at > now() AS scheduled
FROM {schema}.jobs
WHERE status = 'pending'
ORDER BY created_at, id
LIMIT 1"""

#: Running jobs with their worker thread, how long they have run and how much of their lease
#: is left (negative: expired, a rescue will take the job back).
WATCH_RUNNING = """\
SELECT id, type, worker_id, attempts,
       extract(epoch FROM now() - started_at)::float8 AS running_for,
       extract(epoch FROM locked_until - now())::float8 AS lease_left
FROM {schema}.jobs
WHERE status = 'running'
ORDER BY worker_id, id
LIMIT %(limit)s"""

#: Sessions of this database waiting for a lock (``pg_locks.granted`` false), with the
#: sessions that block them (``pg_blocking_pids``). Workers that claim with ``SKIP LOCKED``
#: never wait here for a row lock (a table lock taken by DDL would still stop them); plain
#: ``FOR UPDATE`` makes them queue up (notebook 03). Another role's query text reads
#: ``<insufficient privilege>``.
WATCH_LOCK_WAITS = """\
SELECT a.pid, a.application_name, l.locktype, l.mode, pg_blocking_pids(a.pid) AS blocked_by,
       extract(epoch FROM now() - l.waitstart)::float8 AS waiting_for, left(a.query, 60) AS query
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
WHERE NOT l.granted AND a.datname = current_database()
ORDER BY a.pid"""

#: Live and dead rows of the jobs table, as the statistics system last counted them (it lags
#: by up to a second or so), and seconds since it was last vacuumed (by hand or autovacuum).
WATCH_DEAD_ROWS = """\
SELECT n_live_tup, n_dead_tup,
       extract(epoch FROM now() - greatest(last_vacuum, last_autovacuum))::float8 AS vacuumed_ago
FROM pg_stat_user_tables
WHERE schemaname = %(schema)s AND relname = 'jobs'"""

# -- a class on one server (pgqueue-lab classroom, pgqueue_lab.classroom) -------------------
#
# Roles, databases, passwords and comments are not parameters in these statements (PostgreSQL
# takes no parameters in CREATE/ALTER/COMMENT): identifiers go through psycopg.sql.Identifier
# and values through psycopg.sql.Literal. Passwords are sent already hashed (SCRAM verifiers
# made by libpq), so the plain text never reaches the server or its log.

#: May the connected role create roles and databases?
CLASSROOM_RIGHTS = """\
SELECT current_user, rolsuper, rolcreaterole, rolcreatedb
FROM pg_roles
WHERE rolname = current_user"""

#: The server's connection budget: ``max_connections``, the slots kept for superusers (and,
#: from PostgreSQL 16, for ``pg_use_reserved_connections``), and the connection limits of
#: classroom students of *other* prefixes (other classes on the same server).
CLASSROOM_CONNECTIONS = """\
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT coalesce(sum(rolconnlimit), 0)::int FROM pg_roles
        WHERE starts_with(coalesce(shobj_description(oid, 'pg_authid'), ''), %(marker)s)
          AND shobj_description(oid, 'pg_authid') <> %(mark)s AND rolconnlimit > 0)"""

#: The students this prefix's ``create`` made (marked by their comment), with their database
#: (``NULL`` if missing), whether the database is theirs (marked, or owned by the student), and
#: the role's settings (``{idle_in_transaction_session_timeout=300s}``).
CLASSROOM_STUDENTS = """\
SELECT r.rolname, r.rolconnlimit, d.datname,
       d.datname IS NOT NULL AND (shobj_description(d.oid, 'pg_database') = %(mark)s
                                  OR d.datdba = r.oid) AS database_ours,
       (SELECT s.setconfig FROM pg_db_role_setting AS s
        WHERE s.setrole = r.oid AND s.setdatabase = 0) AS settings
FROM pg_roles AS r
LEFT JOIN pg_database AS d ON d.datname = r.rolname
WHERE shobj_description(r.oid, 'pg_authid') = %(mark)s
ORDER BY r.rolname"""

#: Roles and databases that already carry one of these names, and whether ``create`` made them.
CLASSROOM_NAMES_TAKEN = """\
SELECT 'role' AS kind, rolname AS name, coalesce(shobj_description(oid, 'pg_authid') = %(mark)s, false)
FROM pg_roles WHERE rolname = ANY(%(names)s)
UNION ALL
SELECT 'database', datname, coalesce(shobj_description(oid, 'pg_database') = %(mark)s, false)
       OR datdba IN (SELECT oid FROM pg_roles WHERE rolname = datname
                     AND shobj_description(oid, 'pg_authid') = %(mark)s)
FROM pg_database WHERE datname = ANY(%(names)s)
ORDER BY 2, 1"""

#: A student: may log in, nothing more, at most ``{limit}`` sessions at once.
CLASSROOM_CREATE_ROLE = """\
CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
    PASSWORD {password} CONNECTION LIMIT {limit}"""
#: The mark ``drop`` looks for: it removes only what carries it.
CLASSROOM_MARK_ROLE = "COMMENT ON ROLE {role} IS {mark}"
#: A transaction left open ends after this long, so a forgotten one cannot hold its locks (or a
#: connection slot) for the rest of the lesson. Applies to the role's next sessions.
CLASSROOM_ROLE_TIMEOUT = "ALTER ROLE {role} SET idle_in_transaction_session_timeout = {timeout}"
CLASSROOM_ROLE_LIMIT = "ALTER ROLE {role} CONNECTION LIMIT {limit}"
CLASSROOM_SET_PASSWORD = "ALTER ROLE {role} PASSWORD {password}"
#: A teacher who is not a superuser must be a member of a student role to create a database
#: owned by it, and later to drop it (and may then look into the student's database).
CLASSROOM_JOIN_ROLE = "GRANT {role} TO CURRENT_USER"
#: The student's own database; its owner may do anything in it.
CLASSROOM_CREATE_DATABASE = "CREATE DATABASE {database} OWNER {role}"
CLASSROOM_MARK_DATABASE = "COMMENT ON DATABASE {database} IS {mark}"
#: Every role may connect to a new database (and create temporary tables in it) through
#: PUBLIC: take that away, so only its owner (and superusers) get in.
CLASSROOM_REVOKE_PUBLIC = "REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC"

#: Sessions of the students right now, per role.
CLASSROOM_SESSIONS = """\
SELECT usename, count(*)::int
FROM pg_stat_activity
WHERE usename = ANY(%(roles)s)
GROUP BY usename"""

#: No new logins while a class is dropped.
CLASSROOM_NOLOGIN = "ALTER ROLE {role} NOLOGIN"
#: End the students' sessions, wherever they are connected (waiting up to 5 s for each).
CLASSROOM_TERMINATE = """\
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))::int
FROM pg_stat_activity
WHERE (usename = ANY(%(roles)s) OR datname = ANY(%(databases)s)) AND pid <> pg_backend_pid()"""
CLASSROOM_DROP_DATABASE = "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
#: Privileges granted to the role, and objects it owns, in the database the teacher is connected
#: to (a role cannot be dropped while anything refers to it).
CLASSROOM_DROP_OWNED = "DROP OWNED BY {role}"
CLASSROOM_DROP_ROLE = "DROP ROLE IF EXISTS {role}"

#: In a student's database: the schemas of the course's notebooks (``nb03_claiming``...), which
#: each notebook creates when it starts and drops when it ends.
CLASSROOM_NOTEBOOK_SCHEMAS = """\
SELECT nspname FROM pg_namespace WHERE nspname ~ '^nb[0-9]{2}_' ORDER BY nspname"""

#: In a student's database: every schema holding a queue's ``jobs`` table.
CLASSROOM_JOB_TABLES = """\
SELECT n.nspname
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'status' AND NOT a.attisdropped
WHERE c.relname = 'jobs' AND c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY n.nspname"""

#: Jobs per status in one queue (combined with ``UNION ALL`` over a student's queues).
CLASSROOM_JOBS_BY_STATUS = "SELECT status, count(*)::int FROM {schema}.jobs GROUP BY status"


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


# -- the queue's health (pgqueue_lab.health, notebook 15) -------------------------------------

#: The client session of this database whose open transaction holds back vacuum the longest:
#: the older of its snapshot (``backend_xmin``: REPEATABLE READ, SERIALIZABLE, a running
#: statement, an open cursor) and its own transaction id (``backend_xid``: it wrote or locked a
#: row), by ``age()`` (transaction ids assigned since, not time), with how long its transaction
#: has been open and its state. Row versions deleted by a transaction still running at that
#: point, or by a later one, cannot be removed by vacuum while it stays open. Only client
#: backends: an autovacuum worker shows a ``backend_xmin`` that holds back no other vacuum (a
#: manual VACUUM is a client backend and is still listed; so would be its snapshot). Not
#: counted here, though they hold back the horizon too: prepared transactions
#: (``pg_prepared_xacts``), replication slots (``pg_replication_slots.xmin``), standbys with
#: ``hot_standby_feedback`` (their walsender has no database), and background workers.
HEALTH_OLDEST_SNAPSHOT = """\
SELECT pid, application_name, state,
       greatest(age(backend_xmin), age(backend_xid)) AS xmin_age,
       extract(epoch FROM now() - xact_start)::float8 AS open_for
FROM pg_stat_activity
WHERE datname = current_database()
  AND backend_type = 'client backend'
  AND pid <> pg_backend_pid()
  AND (backend_xmin IS NOT NULL OR backend_xid IS NOT NULL)
ORDER BY greatest(age(backend_xmin), age(backend_xid)) DESC, xact_start, pid
LIMIT 1"""

#: Pending jobs, and how long the due job that has waited longest has been due (seconds since
#: its ``run_at``; NULL if none is due). A job scheduled for later is not late.
HEALTH_BACKLOG = """\
SELECT count(*) AS pending,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8 AS oldest_due
FROM {schema}.jobs
WHERE status = 'pending'"""

# -- retention: finished jobs leave the hot table (pgqueue_lab.retention, notebook 16) -------

#: The archive: the jobs table's columns (``LIKE`` copies names, types and NOT NULL, not the
#: identity, defaults or checks), plus when each row was archived. Plain, keyed by ``id``.
CREATE_ARCHIVE = """\
CREATE TABLE IF NOT EXISTS {schema}.jobs_archive (
    LIKE {schema}.jobs,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id)
)"""

#: The archive partitioned by ``finished_at`` (one partition per period, made by
#: :func:`pgqueue_lab.retention.archive` as needed): an old period leaves with ``DROP TABLE``,
#: no row by row ``DELETE``, no dead rows. A primary key of a partitioned table must include the
#: partition key.
CREATE_ARCHIVE_PARTITIONED = """\
CREATE TABLE IF NOT EXISTS {schema}.jobs_archive (
    LIKE {schema}.jobs,
    archived_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, finished_at)
) PARTITION BY RANGE (finished_at)"""

#: One partition of the archive: rows finished from ``start`` (included) to ``end`` (excluded).
CREATE_ARCHIVE_PARTITION = """\
CREATE TABLE IF NOT EXISTS {schema}.{partition}
    PARTITION OF {schema}.jobs_archive FOR VALUES FROM ({start}) TO ({end})"""

#: A partitioned archive remembers its period (seconds) in its comment.
ARCHIVE_COMMENT = "COMMENT ON TABLE {schema}.jobs_archive IS {comment}"

#: Does the archive exist, is it partitioned, and its comment? (No row: no archive.)
ARCHIVE_KIND = """\
SELECT c.relkind = 'p', obj_description(c.oid, 'pg_class')
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relname = 'jobs_archive'"""

#: Retention runs of one queue take turns (two workers' housekeepers, say): a transaction-level
#: advisory lock on the queue's name, released at commit or rollback.
RETENTION_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))"

#: The periods (start times, as seconds since the epoch) of the finished jobs the next
#: ARCHIVE would take: the partitions it needs.
ARCHIVE_PERIODS = """\
SELECT DISTINCT floor(extract(epoch FROM finished_at) / %(period)s)::bigint * %(period)s
FROM {schema}.jobs
WHERE status = ANY(%(statuses)s::text[])
  AND finished_at < now() - make_interval(secs => %(older_than)s)
ORDER BY 1"""

#: Move finished jobs (finished more than ``older_than`` seconds ago) from ``jobs`` to
#: ``jobs_archive`` in one statement, so any one snapshot sees each job in exactly one of them
#: (two READ COMMITTED statements, a snapshot each, may see it in both or in neither).
#: ``FOR UPDATE SKIP LOCKED`` leaves alone a row another transaction holds (a ``requeue`` of a
#: dead letter, say); a row changed meanwhile is checked again (the status condition is
#: repeated in the DELETE), so nothing that stopped being finished is moved. The rows are
#: chosen in a ``MATERIALIZED`` CTE, run exactly once: written as ``WHERE id IN (SELECT ...
#: LIMIT n FOR UPDATE SKIP LOCKED)``, the planner may run the subquery again for each row and
#: take more than ``n`` rows (the tests caught it doing so).
ARCHIVE = """\
WITH doomed AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE status = ANY(%(statuses)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
    ORDER BY finished_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), moved AS (
    DELETE FROM {schema}.jobs AS j
    USING doomed
    WHERE j.id = doomed.id AND j.status = ANY(%(statuses)s::text[])
    RETURNING j.*
)
INSERT INTO {schema}.jobs_archive (
    id, queue, type, payload, status, priority, run_at, attempts, max_attempts, last_error,
    errors, worker_id, claim_token, locked_until, created_at, started_at, finished_at)
SELECT id, queue, type, payload, status, priority, run_at, attempts, max_attempts, last_error,
       errors, worker_id, claim_token, locked_until, created_at, started_at, finished_at
FROM moved
RETURNING id"""

#: Delete finished jobs (finished more than ``older_than`` seconds ago) without keeping them.
PRUNE = """\
WITH doomed AS MATERIALIZED (
    SELECT id FROM {schema}.jobs
    WHERE status = ANY(%(statuses)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
    ORDER BY finished_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.jobs AS j
USING doomed
WHERE j.id = doomed.id AND j.status = ANY(%(statuses)s::text[])
RETURNING j.id"""

#: Delete on completion: a claimed job that succeeded is deleted instead of being marked
#: ``completed`` (fenced by the claim token, like COMPLETE). Nothing is left to clean up, and
#: nothing is left to look at either.
COMPLETE_DELETING = """\
DELETE FROM {schema}.jobs
WHERE id = ANY(%(ids)s) AND status = 'running' AND claim_token = %(token)s
RETURNING id"""

#: Delete archived rows finished more than ``older_than`` seconds ago (a plain archive).
PRUNE_ARCHIVE = """\
DELETE FROM {schema}.jobs_archive
WHERE finished_at < now() - make_interval(secs => %(older_than)s)
RETURNING id"""

#: The partitions of the archive with their bounds, oldest first, and whether every row they
#: may hold finished more than ``older_than`` seconds ago (so the partition may be dropped).
ARCHIVE_PARTITIONS = """\
SELECT c.relname, b.bounds[1]::timestamptz AS starts, b.bounds[2]::timestamptz AS ends,
       b.bounds[2]::timestamptz <= now() - make_interval(secs => %(older_than)s) AS expired
FROM pg_inherits AS i
JOIN pg_class AS c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS b(bounds)
WHERE i.inhparent = (SELECT c2.oid FROM pg_class AS c2
                     JOIN pg_namespace AS n ON n.oid = c2.relnamespace
                     WHERE n.nspname = %(schema)s AND c2.relname = 'jobs_archive')
ORDER BY starts"""

#: Rows in one partition (counted before it is dropped).
COUNT_PARTITION = "SELECT count(*) FROM {schema}.{partition}"

#: A partition whose period is over leaves whole: no dead rows, no VACUUM. It takes an ACCESS
#: EXCLUSIVE lock on the archive (the parent) until the transaction ends: the request waits
#: behind running queries of the archive, and new ones wait behind it (notebook 16).
DROP_ARCHIVE_PARTITION = "DROP TABLE IF EXISTS {schema}.{partition}"

#: Every job, live or archived, oldest first: what reports read once finished jobs move out.
LIST_JOBS_WITH_ARCHIVE = """\
SELECT id, queue, type, payload, status, priority, attempts, max_attempts, last_error,
       worker_id, created_at, started_at, finished_at
FROM {schema}.jobs
UNION ALL
SELECT id, queue, type, payload, status, priority, attempts, max_attempts, last_error,
       worker_id, created_at, started_at, finished_at
FROM {schema}.jobs_archive
ORDER BY id"""

#: Jobs per status, live and archived together (every state listed, zero included).
STATUS_COUNTS_WITH_ARCHIVE = """\
SELECT s.status, count(j.id) AS jobs
FROM unnest(%(statuses)s::text[]) WITH ORDINALITY AS s(status, n)
LEFT JOIN (SELECT id, status FROM {schema}.jobs
           UNION ALL
           SELECT id, status FROM {schema}.jobs_archive) AS j ON j.status = s.status
GROUP BY s.status, s.n
ORDER BY s.n"""

# -- wake-ups: enqueue without NOTIFY, the start-up self-check (pgqueue_lab.wakeups, nb 17) ---

#: ENQUEUE without the announcement (``enqueue(..., notify=False)``): polling workers find the
#: job, and the commit takes no server-wide NOTIFY lock.
ENQUEUE_QUIET = """\
INSERT INTO {schema}.jobs (queue, type, payload, priority, run_at, max_attempts)
VALUES (%(queue)s, %(type)s, %(payload)s::jsonb, %(priority)s,
        now() + make_interval(secs => %(delay)s), %(max_attempts)s)
RETURNING id"""

#: ENQUEUE_MANY without the announcement (``enqueue_many(..., notify=False)``). Keep the two in
#: step: only the ``announced`` part differs.
ENQUEUE_MANY_QUIET = """\
INSERT INTO {schema}.jobs (queue, type, payload, priority, run_at, max_attempts)
SELECT job->>'queue', job->>'type', job->'payload', (job->>'priority')::int,
       now() + make_interval(secs => (job->>'delay')::float8), (job->>'max_attempts')::int
FROM jsonb_array_elements(%(jobs)s::jsonb) WITH ORDINALITY AS t(job, n)
ORDER BY n
RETURNING id"""

#: A listening session sends itself a notification on the queue's channel: if it does not come
#: back, notifications do not reach this connection (a pooler in transaction mode, a proxy).
SELF_CHECK_NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

#: How full the server's notification queue is, from 0 to 1.
NOTIFICATION_QUEUE_USAGE = "SELECT pg_notification_queue_usage()"
