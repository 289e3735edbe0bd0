"""What the terminal commands share: a progress bar, and the check that a queue exists.

The progress bar (for ``classroom`` and ``enqueue``) is drawn by `rich
<https://rich.readthedocs.io>`_ on stderr, and only when stderr is a terminal and the work is
large enough to be worth watching: in a log file, a pipe or a notebook's subprocess nothing is
drawn, and the command's own summary line says what was done. Without ``rich`` installed (it
comes with the ``classroom`` extra) there is simply no bar.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from . import db
from .errors import QueueNotFoundError
from .queue import Queue

Advance = Callable[[int], None]

#: Below this many steps a bar would only flicker.
MIN_STEPS = 20


def _no_bar(steps: int) -> None:
    return None


@contextmanager
def bar(description: str, total: int, *, min_steps: int = MIN_STEPS) -> Iterator[Advance]:
    """Show a progress bar for ``total`` steps while the block runs; yield ``advance(n)``.

    :param description: what is being done ("creating students").
    :param min_steps: draw nothing for fewer steps than this.
    """
    if total < min_steps or importlib.util.find_spec("rich") is None:
        yield _no_bar
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield _no_bar
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda steps: progress.advance(task, steps)


def require_queue(queue: Queue, dsn: str | None = None) -> None:
    """Check that the queue exists.

    :raises QueueNotFoundError: it does not; the message says how to create it from a terminal.
    """
    try:
        with db.connect(dsn) as conn:
            queue.has_work(conn)
    except QueueNotFoundError:
        raise QueueNotFoundError(
            f"the queue {queue.schema!r} does not exist in this database: create it with "
            f"pgqueue-lab enqueue --create --schema {queue.schema} TYPE "
            f"(or Queue({queue.schema!r}).create(conn))"
        ) from None
