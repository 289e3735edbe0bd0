"""A worker process for the crash tests: runs jobs and records every execution in a ledger.

    python tests/crash_worker.py SCHEMA NAME

Each execution inserts (job_id, worker) into SCHEMA.ledger *before* the job is marked completed,
so a job run twice (its worker killed after running it, before completing it) shows up twice.
"""

from __future__ import annotations

import sys
import threading
import time

from pgqueue_lab import Job, Queue, Worker, connect

schema, name = sys.argv[1], sys.argv[2]
local = threading.local()


def work(job: Job) -> None:
    if not hasattr(local, "conn"):
        local.conn = connect()
    local.conn.execute(f'INSERT INTO "{schema}".ledger (job_id, worker) VALUES (%s, %s)', [job.id, name])
    time.sleep(0.01)


print("ready", flush=True)
Worker(Queue(schema), {"work": work}, threads=2, batch_size=5, lease=1.0, poll_interval=0.2, name=name).run(
    until_empty=True
)
