"""Test set-up: one database for the whole run, shared with the notebook kernels.

If ``PGQUEUE_LAB_DSN`` is unset, the embedded server is started here, once, in the pytest
process, and its DSN is exported so that nbval's kernels (which nbval kills with SIGKILL) and
any subprocess connect to it without attaching to the server themselves.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue_lab import Queue, db


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(db.DSN_ENV):
        os.environ[db.DSN_ENV] = db.embedded_uri()
        os.environ["PGQUEUE_LAB_TEST_EMBEDDED"] = "1"


def pytest_report_header(config: pytest.Config) -> str:
    where = "embedded server" if os.environ.get("PGQUEUE_LAB_TEST_EMBEDDED") else "PGQUEUE_LAB_DSN"
    return f"pgqueue-lab database: {where} ({db.mask_dsn(os.environ[db.DSN_ENV])})"


@pytest.fixture(scope="session")
def dsn() -> str:
    return os.environ[db.DSN_ENV]


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with db.connect(dsn) as connection:
        yield connection


@pytest.fixture
def queue(conn: psycopg.Connection[Any]) -> Iterator[Queue]:
    """A fresh queue in its own schema, dropped afterwards."""
    q = Queue(f"test_{uuid.uuid4().hex[:12]}")
    q.create(conn)
    yield q
    q.drop(conn)
