"""Cancellation: a pending job never runs; a running job is asked to stop.

``cancel(queue, conn, ids)`` moves each pending or running job to ``cancelled``, a final state
like ``completed`` and ``failed`` (the table's CHECK constraint knows it), in one statement
(:data:`CANCEL`). Jobs already finished are left alone.

- A **pending** job is simply never claimed again: the claim takes only ``pending`` jobs, and
  no retry, rescue or requeue takes a cancelled one back.
- A **running** job is cancelled too, and its worker is told: a NOTIFY on the queue's cancel
  channel (``<schema>_cancel``, the job id as payload) reaches a listening worker within
  milliseconds; the worker's heartbeat also asks the database about the jobs it runs (the
  polling fallback, at least once a second). The worker then sets :attr:`Job.cancel_requested
  <pgqueue_lab.core.queue.Job.cancel_requested>`: a long handler checks it and returns early. Jobs
  the worker claimed but had not started are dropped when it hears of the cancel, and never
  start. ``cancel()`` returns before the worker hears: a claimed job whose turn comes first (a
  notification lost, so until the next poll, up to about a second) still starts, and learns
  of its cancel at that poll. Python cannot stop a thread, so a handler that never looks runs
  to its end.
- **A cancelled job's handler may still be running** (it has not looked yet, or never looks;
  a handler that overran ``job_timeout`` likewise): the row is ``cancelled``, so it no longer holds its
  ``unique_key`` nor counts towards its key's ``per_key`` limit, and a new job of the same key
  may start beside it. Keys and limits count rows in ``running``, not handlers still executing.
- **The job stays cancelled**, whatever its handler does: the late complete, fail, heartbeat or
  release of that run finds no row still ``running`` (the fencing of every write), so a
  cancelled job is never marked completed, retried or released.

Peers: River's ``JobCancel`` (a ``cancelled`` state, running jobs told by NOTIFY), Oban's
``cancel_job`` (``cancelled`` state), graphile-worker's ``permanently_fail_jobs``, pg-boss's
``cancel``.

Inside a :class:`~pgqueue_lab.core.worker.Worker` this runs as :class:`Watch`, an extension
every worker has. ``pgqueue-lab cancel --schema S ID...`` (:mod:`pgqueue_lab.tools.control`)
does the same as :func:`cancel` from a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import psycopg

from ..core import sql, validate
from ..core.holdings import Holdings
from ..core.queue import Connection, Queue
from ..core.worker import Extension, Worker

# -- statements (print one: ``print(cancel.CANCEL)``) --------------------------------------------

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


def channel(queue: Queue) -> str:
    """The queue's cancel channel: ``<schema>_cancel`` (fits the 63-byte identifier limit)."""
    return f"{queue.schema}_cancel"


def _ids(job_ids: int | Iterable[int]) -> list[int]:
    ids = [job_ids] if isinstance(job_ids, int) else list(job_ids)
    return [validate.integer(i, "job id", bits=64) for i in ids]


def cancel(queue: Queue, conn: Connection, job_ids: int | Iterable[int]) -> dict[int, str]:
    """Cancel jobs. Returns ``{id: what it was}`` for each job cancelled: ``"pending"`` (it
    never runs) or ``"running"`` (its worker is told; its outcome will not be recorded). Ids of
    jobs already finished, or unknown, are left out.

    :raises InvalidInputError: an id is not a 64-bit integer, before anything is sent.
    """
    ids = sorted(set(_ids(job_ids)))
    if not ids:
        return {}
    with queue._tx(conn):
        rows = conn.execute(queue._q(CANCEL), {"ids": ids, "channel": channel(queue)}).fetchall()
    return {int(i): str(was) for i, was in rows}


def listen(queue: Queue, conn: Connection) -> None:
    """Subscribe a listening connection to the cancel channel too."""
    conn.execute(sql.compose(sql.LISTEN, queue.schema, channel=channel(queue)))


def requested(queue: Queue, notifies: Iterable[psycopg.Notify]) -> set[int]:
    """The job ids in the cancel notifications among ``notifies``."""
    name = channel(queue)
    return {
        int(n.payload) for n in notifies if n.channel == name and n.payload.isascii() and n.payload.isdigit()
    }


def tell(holdings: Holdings, job_ids: set[int]) -> None:
    """Tell the worker's threads about cancelled jobs: a running handler's job gets
    ``cancel_requested``; a claimed job not started yet is dropped, so it never starts."""
    if not job_ids:
        return
    with holdings.lock:
        for batch in (*holdings.batches.values(), holdings.orphans):
            if batch.current is not None and batch.current.id in job_ids:
                batch.current.request_cancel()
            batch.waiting = [job for job in batch.waiting if job.id not in job_ids]


def poll(queue: Queue, conn: Connection, holdings: Holdings) -> None:
    """The polling fallback (a lost notification): ask the database whether a job some handler
    runs now was cancelled (:data:`CANCELLED_AMONG`), and :func:`tell`."""
    with holdings.lock:
        ids = sorted(
            job.id
            for batch in holdings.batches.values()
            for job in (batch.current, *batch.waiting)
            if job is not None and not job.cancel_requested
        )
    if ids:
        with queue._tx(conn):
            rows = conn.execute(queue._q(CANCELLED_AMONG), {"ids": ids}).fetchall()
        tell(holdings, {int(r[0]) for r in rows})


class Watch(Extension):
    """A worker's part in cancellation: its listener also listens on the cancel channel, and
    its heartbeat asks about the jobs it runs (the polling fallback, for a lost notification).
    """

    def subscribe(self, conn: Connection) -> None:
        listen(self.worker.queue, conn)

    def notified(self, notes: Sequence[psycopg.Notify]) -> None:
        tell(self.holdings, requested(self.worker.queue, notes))

    def beat(self, conn: Connection) -> None:
        poll(self.worker.queue, conn, self.holdings)  # a cancel whose NOTIFY was lost


def watch(worker: Worker) -> Watch:
    """Every worker watches for cancels (an entry of :data:`pgqueue_lab.core.worker.EXTENSIONS`)."""
    return Watch(worker)
