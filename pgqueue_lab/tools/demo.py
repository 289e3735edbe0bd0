"""The seed example, reproduced: enqueue a few jobs, process them, print the final status.

Run it with ``pgqueue-lab demo`` or ``python -m pgqueue_lab``. It creates its own schema, runs
one worker thread (so the output is in job order) and drops the schema at the end.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from ..core import db
from ..core.queue import Job, Queue
from ..core.worker import Worker

DEMO_SCHEMA = "pgqueue_lab_demo"

#: (type, payload) of the demo's jobs, enqueued in this order.
DEMO_JOBS: list[tuple[str, dict[str, Any]]] = [
    ("email", {"to": "alice@example.com", "subject": "Welcome!"}),
    ("email", {"to": "bob@example.com", "subject": "Your invoice"}),
    ("report", {"name": "monthly-sales", "month": "2026-10"}),
    ("resize", {"image": "cat.png", "width": 0}),
    ("email", {"to": "carol@example.com", "subject": "Password reset"}),
    ("report", {"name": "weekly-signups", "week": 44}),
]


def run_demo(dsn: str | None = None, out: TextIO | None = None) -> None:
    """Print the seed's walk-through: enqueue, process, final status. See the module docstring."""
    stream = out or sys.stdout

    def say(line: str = "") -> None:
        print(line, file=stream, flush=True)

    def send_email(job: Job) -> None:
        say(f"    Sending email to: {job.payload['to']}")

    def make_report(job: Job) -> None:
        say(f"    Generating report: {job.payload['name']}")

    def resize(job: Job) -> None:
        say(f"    Resizing {job.payload['image']} to {job.payload['width']}px wide")
        if job.payload["width"] <= 0:
            raise ValueError("width must be positive")

    def narrate(handler: Callable[[Job], None]) -> Callable[[Job], None]:
        def run(job: Job) -> None:
            say(f"  Worker claimed job #{job.id} ({job.type})")
            try:
                handler(job)
            except Exception as exc:
                say(f"    Failed: {exc}")
                raise
            say("    Completed!")

        return run

    queue = Queue(DEMO_SCHEMA)
    dsn = dsn or db.get_dsn()
    with db.connect(dsn) as conn:
        queue.drop(conn)
        queue.create(conn)
        say("Schema created.")
        say()
        say("=== Enqueueing Jobs ===")
        say()
        for job_type, payload in DEMO_JOBS:
            # One attempt each, as in the seed: a failed job stays failed (no retries).
            job_id = queue.enqueue(conn, job_type, payload, max_attempts=1)
            say(f"  Enqueued job #{job_id}: {job_type}")
        say()
        say("=== Processing Jobs ===")
        say()
        handlers = {"email": send_email, "report": make_report, "resize": resize}
        Worker(queue, {k: narrate(v) for k, v in handlers.items()}, dsn=dsn, name="demo").run()
        say()
        say("=== Final Job Status ===")
        say()
        for job in queue.jobs(conn):
            say(f"  Job #{job['id']}: {job['type']} - {job['status']}")
        queue.drop(conn)
        say()
        say("Done!")
