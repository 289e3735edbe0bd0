"""Wake-ups: does NOTIFY reach this worker at all? The start-up self-check.

A worker wakes up early when a ``NOTIFY`` announces a job, and polls every ``poll_interval``
seconds anyway: notifications are a hint, the table is the truth. Some paths to the database
never deliver a notification, silently: PgBouncer in *transaction* pooling does not support
``LISTEN`` (the session that listened is handed to someone else after each transaction), and a
proxy or a network device may drop what the server sends on an idle connection. Nothing fails;
every job simply waits for the next poll.

:func:`self_check` finds out at start: the listening connection sends a notification to its own
channel and waits for it to come back (a session receives its own notifications). If nothing
arrives, it logs a warning that wake-ups fall back to polling. ``Worker`` runs it when its
listener connects for the first time; ``Worker(..., listen=False)`` does not listen at all
(polling only, for a pooler in transaction mode), and ``enqueue(..., notify=False)`` does not
announce (no server-wide lock at commit).
"""

from __future__ import annotations

import logging
import secrets
import time

from ..core import validate
from ..core.queue import Connection, Queue
from ..core.worker import Extension, Worker

# -- statements (print one: ``print(wakeups.SELF_CHECK_NOTIFY)``) --------------------------------

#: A listening session sends itself a notification on the queue's channel: if it does not come
#: back, notifications do not reach this connection (a pooler in transaction mode, a proxy).
SELF_CHECK_NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

#: How full the server's notification queue is, from 0 to 1.
NOTIFICATION_QUEUE_USAGE = "SELECT pg_notification_queue_usage()"

_log = logging.getLogger(__name__)

#: Payloads of self-check notifications start so (a worker ignores them as wake-ups).
PROBE_PREFIX = "pgqueue_lab:self-check:"
#: Seconds the self-check waits for its own notification.
DEFAULT_TIMEOUT = 2.0


def self_check(
    conn: Connection, queue: Queue, *, timeout: float = DEFAULT_TIMEOUT, poll_interval: float | None = None
) -> bool:
    """Send a notification on ``queue``'s channel from ``conn`` (which must already ``LISTEN``
    on it) and wait up to ``timeout`` seconds for it to come back. Returns whether it did; if not,
    logs a warning that wake-ups fall back to polling (every ``poll_interval`` seconds).

    Other notifications that arrive meanwhile are read and dropped (a worker claims at start
    anyway). It ends by running ``LISTEN`` again (a no-op), so ``pg_stat_activity.query`` of
    the session shows ``LISTEN`` as before.

    :raises InvalidInputError: ``timeout`` is unusable.
    :raises psycopg.OperationalError: the connection is lost.
    """
    timeout = validate.seconds(timeout, "timeout")
    payload = f"{PROBE_PREFIX}{secrets.token_hex(6)}"
    conn.execute(SELF_CHECK_NOTIFY, {"channel": queue.channel, "payload": payload})
    deadline = time.monotonic() + timeout
    arrived = False
    while not arrived and (left := deadline - time.monotonic()) > 0:
        arrived = any(n.payload == payload for n in conn.notifies(timeout=left, stop_after=1))
    # LISTEN again (a no-op): the session's last statement in pg_stat_activity reads LISTEN once
    # more, as a tool that watches for listening sessions expects (pgqueue-lab bench does).
    queue.listen(conn)
    if arrived:
        return True
    every = "" if poll_interval is None else f" every {poll_interval:g} s"
    _log.warning(
        "the LISTEN connection of queue %s did not receive its own NOTIFY within %g s: wake-ups "
        "fall back to polling%s. Is it going through a pooler in transaction mode (PgBouncer "
        "does not support LISTEN there) or a proxy that drops notifications? Connect the "
        "listener directly, or use Worker(..., listen=False) to poll on purpose.",
        queue.schema,
        timeout,
        every,
    )
    return False


def queue_usage(conn: Connection) -> float:
    """How full the server's notification queue is, from 0 to 1
    (``pg_notification_queue_usage()``): notifications wait there until every session that was
    listening has read them."""
    row = conn.execute(NOTIFICATION_QUEUE_USAGE).fetchone()
    return 0.0 if row is None else float(row[0])


class SelfCheck(Extension):
    """A worker's listener runs :func:`self_check` once, the first time it listens, and keeps
    the answer in ``worker.wakeups_ok``."""

    def subscribed(self, conn: Connection) -> None:
        worker = self.worker
        if worker.wakeups_ok is None:  # the first time: do notifications arrive at all?
            worker.wakeups_ok = self_check(conn, worker.queue, poll_interval=worker.poll_interval)


def self_checking(worker: Worker) -> SelfCheck | None:
    """A worker that listens checks its wake-ups (an entry of
    :data:`pgqueue_lab.core.worker.EXTENSIONS`)."""
    return SelfCheck(worker) if worker.listen else None
