"""pgqueue-lab: learn to build a job queue on PostgreSQL.

The helper module behind the notebooks, one concept per file:

- :mod:`pgqueue_lab.db` - where the database comes from (``PGQUEUE_LAB_DSN`` or embedded)
- :mod:`pgqueue_lab.sql` - every SQL statement, as named constants you can print
- :mod:`pgqueue_lab.queue` - create, enqueue, claim, complete, fail, wait; leases, dead letters
- :mod:`pgqueue_lab.worker` - threads running handlers by job type, with a housekeeper
- :mod:`pgqueue_lab.holdings` - what a worker holds until each outcome is recorded
- :mod:`pgqueue_lab.health` - is the queue healthy: the oldest open snapshot, dead rows, backlog
- :mod:`pgqueue_lab.retention` - finished jobs leave the hot table: archive, prune, partitions
- :mod:`pgqueue_lab.wakeups` - does NOTIFY reach the worker? the start-up self-check
- :mod:`pgqueue_lab.report` - the queue's state as pandas DataFrames
- :mod:`pgqueue_lab.bench` - the benchmark behind ``pgqueue-lab bench``
- :mod:`pgqueue_lab.validate` / :mod:`pgqueue_lab.errors` - bad input stops before the database
"""

import logging as _logging

from .db import connect, get_dsn
from .errors import (
    DatabaseUnavailableError,
    InvalidInputError,
    PermanentJobError,
    QueueError,
    QueueNotFoundError,
    WorkerError,
)
from .queue import Job, NewJob, Queue
from .worker import Worker, WorkerStats

__all__ = [
    "DatabaseUnavailableError",
    "InvalidInputError",
    "Job",
    "NewJob",
    "PermanentJobError",
    "Queue",
    "QueueError",
    "QueueNotFoundError",
    "Worker",
    "WorkerError",
    "WorkerStats",
    "connect",
    "get_dsn",
]
__version__ = "0.2.0"

# A library adds no handler but this one: the application decides where its log records go.
_logging.getLogger(__name__).addHandler(_logging.NullHandler())
