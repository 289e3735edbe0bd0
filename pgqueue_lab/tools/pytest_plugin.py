"""pytest plugin for running the course's notebooks (and tests): one database for the whole run.

``pgqueue-lab check`` loads it with ``-p pgqueue_lab.tools.pytest_plugin``; this repository's root
``conftest.py`` loads it too. It is not registered automatically for every pytest run.

If ``PGQUEUE_LAB_DSN`` is unset, the embedded server is started here, once, in the pytest
process, and its DSN is exported, so nbval's kernels (which nbval kills with SIGKILL) and any
subprocess they start connect to it without attaching to the server themselves. The server
stops when pytest exits, unless another process still uses it.

At the end of the run it lists the notebook cells that failed, each with its first line.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

from .. import embedded
from ..core import db

#: Set to "1" when this plugin started the embedded server for the run.
EMBEDDED_FLAG = "PGQUEUE_LAB_TEST_EMBEDDED"

_failed_cells = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get(db.DSN_ENV):
        os.environ[db.DSN_ENV] = embedded.embedded_uri()
        os.environ[EMBEDDED_FLAG] = "1"
    config.stash[_failed_cells] = []


def pytest_report_header(config: pytest.Config) -> str:
    where = "embedded server" if os.environ.get(EMBEDDED_FLAG) else db.DSN_ENV
    return f"pgqueue-lab database: {where} ({db.mask_dsn(os.environ[db.DSN_ENV])})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    cell = getattr(item, "cell", None)
    cell_num = getattr(item, "cell_num", None)
    if report.failed and cell is not None and isinstance(cell_num, int):  # an nbval cell
        reason = "failed"
        if call.excinfo is not None:
            reason = (str(call.excinfo.value).strip().splitlines() or ["failed"])[0]
        first = next((line.strip() for line in str(cell.source).splitlines() if line.strip()), "")
        path = item.nodeid.split("::", 1)[0]
        item.config.stash[_failed_cells].append(
            f"{path}, Cell {cell_num} (code cell {cell_num + 1} from the top): {reason}\n    {first}"
        )
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    failed = config.stash.get(_failed_cells, [])
    if failed:
        terminalreporter.section("notebook cells that differ or failed")
        for line in failed:
            terminalreporter.line(line)
