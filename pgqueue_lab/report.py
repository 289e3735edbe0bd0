"""The queue's state as pandas DataFrames.

Built from ``cursor.fetchall()`` and ``cursor.description`` rather than ``pd.read_sql`` (which
warns when given a psycopg connection).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from . import sql
from .queue import Connection, Queue


def frame(conn: Connection, query: Any, params: Any = None) -> pd.DataFrame:
    """Run ``query`` and return its rows as a DataFrame with the query's column names."""
    cur = conn.execute(query, params)
    columns = [d.name for d in cur.description or ()]
    return pd.DataFrame(cur.fetchall(), columns=columns)


def jobs_frame(conn: Connection, queue: Queue, columns: list[str] | None = None) -> pd.DataFrame:
    """Every job, ordered by id, indexed by id. ``columns`` picks columns (default: all)."""
    df = frame(conn, sql.compose(sql.LIST_JOBS, queue.schema)).set_index("id")
    return df[columns] if columns else df


def status_frame(conn: Connection, queue: Queue) -> pd.DataFrame:
    """Jobs per status, every status listed (zero included), in lifecycle order."""
    return frame(conn, sql.compose(sql.STATUS_COUNTS, queue.schema), {"statuses": list(sql.STATUSES)}).set_index(
        "status"
    )
