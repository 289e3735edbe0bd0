"""The demo's job handlers, slowed down so a class can watch them: ``pgqueue-lab worker``'s default.

The seed's three job types (``email``, ``report``, ``resize``), each taking a while (see
:data:`DURATIONS`; a payload's ``"seconds"`` overrides it) and printing one line when done,
named by the worker thread that ran it::

    worker-a-2: job #17 email, attempt 1: sent to alice@example.com (0.5 s)

``resize`` fails when the payload's ``width`` is not positive, as in the seed, so a failure
and its retries can be watched too. Any payload field may be left out.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any

from ..core.queue import Job
from ..errors import PermanentJobError

#: Seconds each job type takes unless its payload says ``"seconds"``: long enough to see jobs
#: running in ``pgqueue-lab watch``, short enough for a lesson.
DURATIONS = {"email": 0.5, "report": 2.0, "resize": 1.0}
#: The longest ``"seconds"`` a payload may ask for.
MAX_SECONDS = 3600.0


def _field(job: Job, name: str, default: Any) -> Any:
    return job.payload.get(name, default) if isinstance(job.payload, Mapping) else default


def _work(job: Job) -> float:
    """Spend the job's time "working"; return it."""
    seconds = _field(job, "seconds", DURATIONS.get(job.type, 1.0))
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or not 0 <= seconds <= MAX_SECONDS
    ):
        raise PermanentJobError(
            f"payload 'seconds' must be a number from 0 to {MAX_SECONDS:g}, got {seconds!r}"
        )
    time.sleep(seconds)
    return float(seconds)


def _say(job: Job, text: str, seconds: float) -> None:
    thread = threading.current_thread().name
    print(f"{thread}: job #{job.id} {job.type}, attempt {job.attempts}: {text} ({seconds:g} s)", flush=True)


def send_email(job: Job) -> None:
    seconds = _work(job)
    _say(job, f"sent to {_field(job, 'to', 'someone@example.com')}", seconds)


def make_report(job: Job) -> None:
    seconds = _work(job)
    _say(job, f"report {_field(job, 'name', 'monthly-sales')} written", seconds)


def resize(job: Job) -> None:
    width = _field(job, "width", 800)
    seconds = _work(job)
    if not isinstance(width, (int, float)) or width <= 0:
        raise ValueError(f"width must be positive, got {width!r}")
    _say(job, f"{_field(job, 'image', 'cat.png')} resized to {width}px", seconds)


#: What ``pgqueue-lab worker`` runs unless ``--handlers module:attr`` names another mapping.
HANDLERS = {"email": send_email, "report": make_report, "resize": resize}
