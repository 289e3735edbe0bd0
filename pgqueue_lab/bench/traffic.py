"""Count what a connection sends: round trips, statements, transactions (notebook 09 uses it)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from psycopg import pq

from ..core.queue import Connection


@dataclass
class Traffic:
    """What a connection sent while traced (see :func:`traffic`)."""

    round_trips: int = 0
    statements: int = 0
    transactions: int = 0


@contextmanager
def traffic(conn: Connection) -> Iterator[Traffic]:
    """Count the round trips, statements and transactions ``conn`` sends inside the block.

    Uses libpq's protocol trace: each ``Sync`` (end of a parameterised statement) or simple
    ``Query`` (``BEGIN``, ``COMMIT``) is one round trip; a transaction is a ``COMMIT``/``ROLLBACK``
    or a statement sent outside ``BEGIN``, which commits on its own. The one-off round trip in
    which psycopg prepares a statement (on its fifth use) is left out.
    """
    counts = Traffic()
    fd, path = tempfile.mkstemp(prefix="pgqueue-lab-trace-")
    try:
        conn.pgconn.trace(fd)
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            yield counts
        finally:
            conn.pgconn.untrace()
        with open(path, encoding="utf-8", errors="replace") as f:
            messages = [line.rstrip("\n").split("\t") for line in f if line.startswith("F\t")]
    finally:
        os.close(fd)
        os.unlink(path)
    in_block = executed = False
    for message in messages:
        kind, text = message[2], "\t".join(message[3:]).strip().strip('"')
        if kind == "Query":
            counts.round_trips += 1
            command = text.split()[0].upper() if text else ""
            if command == "BEGIN":
                in_block = True
            elif command in ("COMMIT", "ROLLBACK"):
                in_block = False
                counts.transactions += 1
            else:
                counts.statements += 1
                counts.transactions += not in_block
        elif kind == "Execute":
            counts.statements += 1
            executed = True
        elif kind == "Sync" and executed:
            counts.round_trips += 1
            counts.transactions += not in_block
            executed = False
