"""``pgqueue-lab worker``: a worker process in a terminal, serving one queue until Ctrl-C.

::

    pgqueue-lab worker --schema nb10_live --threads 2 --name worker-a

It runs a :class:`~pgqueue_lab.core.worker.Worker` with the demo's handlers
(:mod:`pgqueue_lab.tools.handlers`:
``email``, ``report``, ``resize``, slowed down to watch) or your own (``--handlers module:attr``,
a mapping of job type to function; the module is looked up in the current folder first).

- Each finished job prints one line, named by the thread that ran it; a handler's failure is
  logged on stderr in one line (``--verbose``: with its traceback).
- Its sessions are named ``pgqueue-lab <name>`` (``application_name``), as ``pg_stat_activity``
  and ``pgqueue-lab watch`` show them.
- **Ctrl-C** (or ``SIGTERM``) stops it gracefully: jobs already running finish and are recorded,
  jobs claimed but not started go back to ``pending``. A **second Ctrl-C** stops it at once: the
  jobs it held come back when their lease runs out (``--lease``), like those of a crashed worker.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any, TextIO

from ..core import validate
from ..core.queue import Queue
from ..core.worker import Handler, Worker
from ..errors import InvalidInputError
from . import handlers as demo_handlers
from .terminal import require_queue

#: The lease of a terminal worker: the time its jobs stay away after it is killed.
DEFAULT_LEASE = 15.0


def load_handlers(spec: str) -> dict[str, Handler]:
    """Import ``module:attr`` and return it as ``{job type: handler}``.

    :raises InvalidInputError: the spec is malformed, the import fails, or ``attr`` is not a
        mapping of job types to functions.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidInputError(
            f"--handlers {spec!r}: give module:attr, e.g. myjobs:HANDLERS (a dict of job type to function)"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: your module in the current folder
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's module, in one line
        raise InvalidInputError(
            f"--handlers {spec!r}: cannot import {module_name}: {type(exc).__name__}: {exc}"
        ) from None
    value = getattr(module, attr, None)
    if value is None:
        raise InvalidInputError(f"--handlers {spec!r}: module {module_name} has no {attr}")
    if not isinstance(value, Mapping) or not value:
        raise InvalidInputError(
            f"--handlers {spec!r}: {attr} must be a non-empty dict of job type to function, "
            f"got {type(value).__name__}"
        )
    return dict(value)


class _OneLine(logging.Formatter):
    """``thread: message: ExceptionType: text``, without the traceback (unless verbose)."""

    def __init__(self, verbose: bool) -> None:
        super().__init__("%(threadName)s: %(message)s")
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        if self.verbose or not record.exc_info:
            return super().format(record)
        exc = record.exc_info[1]
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return f"{super().format(record)}: {type(exc).__name__}: {exc}"


def _log_to(stream: TextIO, verbose: bool) -> None:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_OneLine(verbose))
    logger = logging.getLogger("pgqueue_lab")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve a queue from this terminal until Ctrl-C (again: at once), with the demo's handlers "
        f"({', '.join(demo_handlers.HANDLERS)}) or your own."
    )
    parser.add_argument("--schema", required=True, help="the queue's schema (it must exist)")
    parser.add_argument("--threads", type=int, default=1, metavar="N", help="worker threads (default 1)")
    parser.add_argument("--batch", type=int, default=1, metavar="B", help="jobs claimed at once (default 1)")
    parser.add_argument(
        "--handlers", metavar="MODULE:ATTR", help="your handlers: a dict of job type to function"
    )
    parser.add_argument(
        "--name", help="the worker's name, for worker_id and watch (default worker-<pid>-...)"
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=DEFAULT_LEASE,
        metavar="SECONDS",
        help=f"how long a claim holds without a heartbeat (default {DEFAULT_LEASE:g})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log more, with tracebacks")


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    queue = Queue(args.schema)
    handlers = load_handlers(args.handlers) if args.handlers else dict(demo_handlers.HANDLERS)
    worker = Worker(
        queue,
        handlers,
        threads=args.threads,
        batch_size=args.batch,
        name=args.name,
        lease=validate.seconds(args.lease, "--lease"),
    )
    os.environ["PGAPPNAME"] = f"pgqueue-lab {worker.name}"[:63]  # libpq names the sessions
    require_queue(queue, worker.dsn)
    _log_to(err, args.verbose)
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:
            print(
                f"{worker.name}: stopped at once; the jobs it held return to pending when their lease "
                f"runs out (within {worker.lease:g} s)",
                file=err,
                flush=True,
            )
            out.flush()
            os._exit(130)
        stopping = True
        print(f"{worker.name}: stopping after the running jobs (Ctrl-C again: at once)", file=err, flush=True)
        raise KeyboardInterrupt

    previous: dict[int, Callable[[int, FrameType | None], Any] | int | None] = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        print(
            f"{worker.name} (pid {os.getpid()}): serving queue {queue.schema} with {worker.threads} "
            f"thread(s), batch {worker.batch_size}, lease {worker.lease:g} s; job types: "
            f"{', '.join(sorted(handlers))}. Ctrl-C stops.",
            file=out,
            flush=True,
        )
        try:
            worker.run(until_empty=False)
        except KeyboardInterrupt:
            worker.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = worker.stats
    print(
        f"{worker.name}: stopped; completed {stats.total_completed}, failed {stats.total_failed} "
        f"(attempts), rescued {stats.rescued} from other workers",
        file=out,
        flush=True,
    )
    return 0
