"""pgqueue-lab: learn to build a job queue on PostgreSQL.

The helper module behind the notebooks, one concept per file:

- :mod:`pgqueue_lab.db` - where the database comes from (``PGQUEUE_LAB_DSN`` or embedded)
- :mod:`pgqueue_lab.sql` - every SQL statement, as named constants you can print
- :mod:`pgqueue_lab.queue` - create, enqueue, claim, complete, fail, wait; leases, dead letters
- :mod:`pgqueue_lab.worker` - threads running handlers by job type, with a housekeeper
- :mod:`pgqueue_lab.report` - the queue's state as pandas DataFrames
- :mod:`pgqueue_lab.bench` - the benchmark behind ``pgqueue-lab bench``
- :mod:`pgqueue_lab.validate` / :mod:`pgqueue_lab.errors` - bad input stops before the database
"""

from .db import connect, get_dsn
from .errors import DatabaseUnavailableError, InvalidInputError, PermanentJobError, QueueError
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
    "Worker",
    "WorkerStats",
    "connect",
    "get_dsn",
]
__version__ = "0.1.0"
