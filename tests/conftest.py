"""Fixtures: the run's DSN (set by the root conftest.py), a connection, a fresh queue."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from pgqueue_lab import Queue, db


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
