"""pytest set-up shared by tests/ and notebooks/: one database for the whole run.

If ``PGQUEUE_LAB_DSN`` is unset, the embedded server is started here, once, in the pytest
process, and its DSN is exported, so nbval's kernels (which nbval kills with SIGKILL) and any
subprocess connect to it without attaching to the server themselves.
"""

from __future__ import annotations

import os

import pytest

from pgqueue_lab import db


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(db.DSN_ENV):
        os.environ[db.DSN_ENV] = db.embedded_uri()
        os.environ["PGQUEUE_LAB_TEST_EMBEDDED"] = "1"


def pytest_report_header(config: pytest.Config) -> str:
    where = "embedded server" if os.environ.get("PGQUEUE_LAB_TEST_EMBEDDED") else "PGQUEUE_LAB_DSN"
    return f"pgqueue-lab database: {where} ({db.mask_dsn(os.environ[db.DSN_ENV])})"
