"""A worker process for notebook 07: the notebook starts it, then kills it with SIGKILL.

    python 07_worker_process.py SCHEMA NAME HANG_AT_JOB [BATCH_SIZE]

It runs ``work`` jobs from the queue in SCHEMA with one thread (worker id ``NAME-1``), leases of
1 s and batches of BATCH_SIZE (default 5). Every execution is recorded in SCHEMA.ledger first, so
a job that runs twice shows up twice. When it reaches job HANG_AT_JOB it says so on stdout and
hangs (a stuck network call, say): the notebook knows exactly which jobs the process holds
when it kills it.

It prints two lines on stdout, ``ready`` and ``hanging in job N``, and nothing else. The
database comes from PGQUEUE_LAB_DSN, which the notebook sets.
"""

from __future__ import annotations

import logging
import sys
import threading

from pgqueue_lab import Job, Queue, Worker, connect, sql


def main() -> None:
    schema, name, hang_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    batch_size = int(sys.argv[4]) if len(sys.argv) > 4 else 5
    logging.getLogger("pgqueue_lab").setLevel(logging.ERROR)

    ledger = connect()  # one worker thread, so one connection for the ledger is enough
    record = sql.compose("INSERT INTO {schema}.ledger (job_id, worker) VALUES (%s, %s)", schema)

    def work(job: Job) -> None:
        ledger.execute(record, [job.id, name])
        if job.id == hang_at:
            print(f"hanging in job {job.id}", flush=True)
            threading.Event().wait()  # never returns: only SIGKILL ends this process now

    print("ready", flush=True)
    worker = Worker(
        Queue(schema),
        {"work": work},
        batch_size=batch_size,
        lease=1.0,
        poll_interval=0.2,
        name=name,
    )
    worker.run()


if __name__ == "__main__":  # importing this file (pytest collecting it, say) runs nothing
    main()
