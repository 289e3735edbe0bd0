"""A worker process for the crash tests: runs jobs and records every execution in a ledger.

    python tests/crash_worker.py SCHEMA NAME [--threads N] [--batch N] [--lease S]
                                             [--job-timeout S] [--first-run-sleeps S]

Each execution inserts (job_id, worker, attempt) into SCHEMA.ledger *before* the job is marked
completed, so a job run twice (its worker killed or paused after running it, before completing
it) shows up twice. With ``--first-run-sleeps S`` a job's first attempt sleeps S seconds (a
window in which the test can pause or kill the process); later attempts sleep 10 ms.

It prints ``ready`` when it starts and, when the queue is empty, one JSON line with its stats.
"""

from __future__ import annotations

import argparse
import json
import threading
import time

from pgqueue_lab import Job, Queue, Worker, connect

parser = argparse.ArgumentParser()
parser.add_argument("schema")
parser.add_argument("name")
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--batch", type=int, default=5)
parser.add_argument("--lease", type=float, default=1.0)
parser.add_argument("--job-timeout", type=float, default=None)
parser.add_argument("--first-run-sleeps", type=float, default=0.01)


def main() -> None:
    args = parser.parse_args()
    local = threading.local()

    def work(job: Job) -> None:
        if not hasattr(local, "conn"):
            local.conn = connect()
        local.conn.execute(
            f'INSERT INTO "{args.schema}".ledger (job_id, worker, attempt) VALUES (%s, %s, %s)',
            [job.id, args.name, job.attempts],
        )
        time.sleep(args.first_run_sleeps if job.attempts == 1 else 0.01)

    print("ready", flush=True)
    worker = Worker(
        Queue(args.schema),
        {"work": work},
        threads=args.threads,
        batch_size=args.batch,
        lease=args.lease,
        job_timeout=args.job_timeout,
        poll_interval=0.2,
        name=args.name,
    )
    stats = worker.run(until_empty=True)
    print(json.dumps({"completed": stats.total_completed, "failed": stats.total_failed, "lost": stats.lost}))


if __name__ == "__main__":
    main()
