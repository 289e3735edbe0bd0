"""Pausing a named queue: no worker claims its jobs until it is resumed; workers keep running.

``pause(queue, conn, "emails")`` adds the name to the small ``paused_queues`` table; every claim
checks it (``queue NOT IN (SELECT ...)`` in :data:`pgqueue_lab.core.sql.CLAIM`: the table is read
once per claim, into a hash table), so the pause takes effect at the next claim of every
worker, wherever it runs. Jobs
already claimed run to their end. ``resume`` deletes the row and announces the queue (NOTIFY),
so idle workers look at once. Enqueueing into a paused queue works; its jobs wait.

A draining worker (``run(until_empty=True)``) does not wait for a paused queue: its pending
jobs do not count as work left (:data:`pgqueue_lab.core.sql.HAS_WORK`).

Peers: Oban's ``pause_queue``/``resume_queue``, River's ``QueuePause``/``QueueResume``,
BullMQ's ``queue.pause()``; pg-boss has none (pg-boss#659 asks for it).

The ``paused_queues`` table is the core's (:data:`pgqueue_lab.core.sql.CREATE_PAUSED_TABLE`),
since its claim reads it; this module writes it. ``pgqueue-lab pause --schema S QUEUE`` and
``pgqueue-lab resume --schema S QUEUE`` (:mod:`pgqueue_lab.tools.control`) do the same from a
terminal; ``pgqueue-lab pause --schema S`` lists the paused queues.
"""

from __future__ import annotations

from ..core import validate
from ..core.queue import Connection, Queue

# -- statements (print one: ``print(pause.PAUSE)``) ----------------------------------------------

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


def pause(queue: Queue, conn: Connection, name: str) -> bool:
    """Pause the named queue ``name``. Returns ``False`` if it was paused already.

    :raises InvalidInputError: ``name`` is not a usable queue name, before anything is sent.
    """
    params = {"queue": validate.job_type(name, what="queue name")}
    with queue._tx(conn):
        return conn.execute(queue._q(PAUSE), params).fetchone() is not None


def resume(queue: Queue, conn: Connection, name: str) -> bool:
    """Resume the named queue ``name`` and wake idle workers. Returns ``False`` if it was not
    paused.

    :raises InvalidInputError: ``name`` is not a usable queue name, before anything is sent.
    """
    params = {"queue": validate.job_type(name, what="queue name"), "channel": queue.channel}
    with queue._tx(conn):
        return conn.execute(queue._q(RESUME), params).fetchone() is not None


def paused(queue: Queue, conn: Connection) -> list[str]:
    """The paused queues, by name."""
    with queue._tx(conn):
        return [str(r[0]) for r in conn.execute(queue._q(PAUSED)).fetchall()]
