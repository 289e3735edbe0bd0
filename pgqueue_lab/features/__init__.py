"""The features: each one a module of its own, with its statements beside its code.

Read them after the core, in any order; each depends on :mod:`pgqueue_lab.core` and never the
reverse. The notebook that teaches each one:

- :mod:`~pgqueue_lab.features.unique` - at most one live job per ``unique_key`` (notebook 13)
- :mod:`~pgqueue_lab.features.cancel` - a pending job never runs, a running one is told (13)
- :mod:`~pgqueue_lab.features.pause` - a named queue's jobs wait until it is resumed (14)
- :mod:`~pgqueue_lab.features.limits` - per-key concurrency limits and fairness (14)
- :mod:`~pgqueue_lab.features.schedule` - periodic jobs, cron or interval (14)
- :mod:`~pgqueue_lab.features.health` - the oldest open snapshot, dead rows, backlog (15)
- :mod:`~pgqueue_lab.features.retention` - finished jobs leave the hot table (16)
- :mod:`~pgqueue_lab.features.wakeups` - does NOTIFY reach the worker? (17)

The core offers two extension points, and this file plugs the features into them (it runs
when ``pgqueue_lab`` is imported, before any of your code):

- :data:`pgqueue_lab.core.queue.EXTENSIONS`: statements :meth:`Queue.create
  <pgqueue_lab.core.queue.Queue.create>` runs after its own, the claim with ``per_key`` or
  ``fair``, and enqueueing jobs with keys;
- :data:`pgqueue_lab.core.worker.EXTENSIONS`: what every :class:`~pgqueue_lab.core.worker.Worker`
  builds (:class:`~pgqueue_lab.core.worker.Extension`): cancellation, the wake-up self-check,
  the scheduler. ``Worker(retention=...)`` adds :class:`~pgqueue_lab.features.retention.Schedule`.
"""

from ..core import queue as _queue
from ..core import worker as _worker
from . import cancel, health, limits, pause, retention, schedule, unique, wakeups

_queue.EXTENSIONS.schema[:] = [
    unique.CREATE_UNIQUE_INDEX,
    limits.CREATE_KEY_TURNS_TABLE,
    limits.ANALYZE_KEY_TURNS,
    schedule.CREATE_SCHEDULES_TABLE,
]
_queue.EXTENSIONS.claim = limits.claim
_queue.EXTENSIONS.enqueue = unique.enqueue_keyed
_queue.EXTENSIONS.enqueue_many = unique.enqueue_many
_worker.EXTENSIONS[:] = [cancel.watch, wakeups.self_checking, schedule.scheduling]

__all__ = ["cancel", "health", "limits", "pause", "retention", "schedule", "unique", "wakeups"]
