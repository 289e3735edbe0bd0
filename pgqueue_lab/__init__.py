"""pgqueue-lab: learn to build a job queue on PostgreSQL.

The helper behind the notebooks, in layers; each imports only from the layers above it in
this list, never from one below:

1. :mod:`pgqueue_lab.errors` - every error the helper raises (bad input stops before the database)
2. :mod:`pgqueue_lab.embedded` - the embedded PostgreSQL, when ``PGQUEUE_LAB_DSN`` is not set
3. :mod:`pgqueue_lab.core` - **the queue the course teaches**: read it in one sitting
   (``validate``, ``sql``, ``db``, ``queue``, ``holdings``, ``worker``, in that order)
4. :mod:`pgqueue_lab.features` - unique jobs, cancellation, pause, per-key limits, schedules,
   health, retention, the wake-up self-check; each plugs into the core's extension points
5. :mod:`pgqueue_lab.bench` - the benchmark behind ``pgqueue-lab bench``
6. :mod:`pgqueue_lab.tools` - the command line, the classroom, the live view, the course copy
   and its check, the demo, the pytest plugin, the notebooks' report helpers

The names a notebook imports are here: ``from pgqueue_lab import Queue, Worker, connect, sql``
(``sql`` is :mod:`pgqueue_lab.core.sql`), the features by name (``from pgqueue_lab import
cancel``), and the tools and the benchmark by name too, imported when first asked for
(``from pgqueue_lab import report``).
"""

import importlib as _importlib
import logging as _logging
from types import ModuleType as _ModuleType

from . import embedded, errors
from ._version import __version__
from .core import db, sql, validate
from .core.db import connect, get_dsn
from .core.queue import Job, NewJob, Queue
from .core.worker import Worker, WorkerStats
from .errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    PermanentJobError,
    QueueError,
    QueueNotFoundError,
    WorkerError,
)
from .features import cancel, health, limits, pause, retention, schedule, unique, wakeups
from .features.retention import Retention

__all__ = [
    "DatabaseUnavailableError",
    "InvalidInputError",
    "Job",
    "NewJob",
    "PermanentJobError",
    "Queue",
    "QueueError",
    "QueueNotFoundError",
    "Retention",
    "Worker",
    "WorkerError",
    "WorkerStats",
    "__version__",
    "cancel",
    "connect",
    "db",
    "embedded",
    "errors",
    "get_dsn",
    "health",
    "limits",
    "pause",
    "retention",
    "schedule",
    "sql",
    "unique",
    "validate",
    "wakeups",
]

#: Modules of the upper layers, imported when first asked for (``from pgqueue_lab import
#: report``): importing ``pgqueue_lab`` stays quick, and pandas or rich load only if used.
_LAZY = {
    "bench": "pgqueue_lab.bench",
    **{
        name: f"pgqueue_lab.tools.{name}"
        for name in (
            "check",
            "classroom",
            "cli",
            "control",
            "course",
            "demo",
            "enqueue",
            "handlers",
            "pytest_plugin",
            "report",
            "serve",
            "terminal",
            "watch",
        )
    },
}


def __getattr__(name: str) -> _ModuleType:
    if name in _LAZY:
        module = _importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    raise AttributeError(f"module 'pgqueue_lab' has no attribute {name!r}")


# A library adds no handler but this one: the application decides where its log records go.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
