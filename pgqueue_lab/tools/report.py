"""The queue's state as pandas DataFrames.

Built from ``cursor.fetchall()`` and ``cursor.description`` rather than ``pd.read_sql`` (which
warns when given a psycopg connection).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..core import sql
from ..core.queue import Connection, Queue
from ..features import retention


def frame(conn: Connection, query: Any, params: Any = None) -> pd.DataFrame:
    """Run ``query`` and return its rows as a DataFrame with the query's column names."""
    cur = conn.execute(query, params)
    columns = [d.name for d in cur.description or ()]
    df: pd.DataFrame = pd.DataFrame(cur.fetchall(), columns=columns)
    return df


def _archived(conn: Connection, queue: Queue) -> bool:
    return conn.execute(retention.ARCHIVE_KIND, {"schema": queue.schema}).fetchone() is not None


def jobs_frame(conn: Connection, queue: Queue, columns: list[str] | None = None) -> pd.DataFrame:
    """Every job, ordered by id, indexed by id. ``columns`` picks columns (default: all).

    Jobs moved to the queue's archive (:mod:`pgqueue_lab.features.retention`) are included."""
    statement = retention.LIST_JOBS_WITH_ARCHIVE if _archived(conn, queue) else sql.LIST_JOBS
    df: pd.DataFrame = frame(conn, sql.compose(statement, queue.schema)).set_index("id")
    if columns:
        df = df.loc[:, columns]
    return df


def status_frame(conn: Connection, queue: Queue) -> pd.DataFrame:
    """Jobs per status, every status listed (zero included), in lifecycle order; archived jobs
    (:mod:`pgqueue_lab.features.retention`) count too."""
    statement = retention.STATUS_COUNTS_WITH_ARCHIVE if _archived(conn, queue) else sql.STATUS_COUNTS
    query = sql.compose(statement, queue.schema)
    df: pd.DataFrame = frame(conn, query, {"statuses": list(sql.STATUSES)}).set_index("status")
    return df
