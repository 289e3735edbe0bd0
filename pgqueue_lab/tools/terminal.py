"""What the terminal commands share: a progress bar, the check that a queue exists, and
:class:`Command`, which starts one of them as a process of its own (as a class would in a
terminal) from a notebook.

The progress bar (for ``classroom`` and ``enqueue``) is drawn by `rich
<https://rich.readthedocs.io>`_ on stderr, and only when stderr is a terminal and the work is
large enough to be worth watching: in a log file, a pipe or a notebook's subprocess nothing is
drawn, and the command's own summary line says what was done. Without ``rich`` installed (it
comes with the ``classroom`` extra) there is simply no bar.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..core import db
from ..core.queue import Queue
from ..errors import QueueNotFoundError

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

    if not sys.stderr.isatty():  # not rich's is_terminal: a notebook's FORCE_COLOR reaches its subprocesses
        yield _no_bar
        return
    console = Console(stderr=True)
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


#: In the environment of a :class:`Command`: the process id of the process that started it.
PARENT_ENV = "PGQUEUE_LAB_PARENT_PID"


def exit_with_parent() -> None:
    """In a process started by :class:`Command`, exit at once (like a crash) when the process
    that started it is gone: a notebook kernel restarted or killed leaves no worker serving on.
    Called by the ``pgqueue-lab`` command line at start; anywhere else it does nothing."""
    parent = os.environ.pop(PARENT_ENV, "")
    if not parent.isdigit():
        return

    def guard() -> None:
        while os.getppid() == int(parent):
            time.sleep(0.5)
        os._exit(137)

    if os.getppid() != int(parent):
        os._exit(137)
    threading.Thread(target=guard, name="exit-with-parent", daemon=True).start()


class Command:
    """A ``pgqueue-lab`` command running as a process of its own, as in a terminal.

    Notebook 10 starts the workers and producers a class starts in terminals this way::

        worker = Command("worker", "--schema", "nb10_live", "--name", "worker-a")
        print("$", worker.command)          # pgqueue-lab worker --schema nb10_live --name worker-a
        worker.wait_for("Ctrl-C stops")     # it has started
        worker.interrupt()                  # Ctrl-C

    It runs with this process's Python and database (``PGQUEUE_LAB_DSN``, or the embedded
    server's DSN); what it prints goes to a temporary file, read by :meth:`output`. It ends by
    itself if this process ends. Every wait is bounded: a timeout raises :class:`TimeoutError`.
    """

    def __init__(self, *args: str | int | float, dsn: str | None = None) -> None:
        self.args = [str(arg) for arg in args]
        fd, name = tempfile.mkstemp(prefix="pgqueue-lab-command-", suffix=".log")
        self._log = Path(name)
        self._kept: str | None = None  # the output, once the file is removed
        env = {
            **os.environ,
            db.DSN_ENV: dsn or db.get_dsn(),
            "PYTHONUNBUFFERED": "1",
            PARENT_ENV: str(os.getpid()),
        }
        with os.fdopen(fd, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pgqueue_lab", *self.args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def __repr__(self) -> str:
        state = "running" if self.returncode is None else f"exited {self.returncode}"
        return f"<Command {self.command!r} {state}>"

    @property
    def command(self) -> str:
        """What to type in a terminal to run the same."""
        return shlex.join(["pgqueue-lab", *self.args])

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """``None`` while it runs; its exit status after (negative: the signal that killed it)."""
        return self.process.poll()

    def output(self) -> str:
        """Everything it printed so far (stdout and stderr)."""
        if self._kept is not None:
            return self._kept
        return self._log.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 30.0) -> None:
        """Wait until it has printed ``text``.

        :raises RuntimeError: it exited first (the message has its last lines).
        :raises TimeoutError: not within ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while text not in self.output():
            if self.returncode is not None:
                last = "\n".join(self.output().strip().splitlines()[-5:])
                raise RuntimeError(
                    f"{self.command} exited ({self.returncode}) before printing {text!r}:\n{last}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.command} did not print {text!r} within {timeout:g} s")
            time.sleep(0.05)

    def interrupt(self) -> None:
        """Ctrl-C (``SIGINT``)."""
        if self.returncode is None:
            self.process.send_signal(signal.SIGINT)

    def kill(self) -> None:
        """``kill -9`` (``SIGKILL``): it dies at once, with no chance to clean up."""
        if self.returncode is None:
            self.process.kill()

    def wait(self, timeout: float = 30.0) -> int:
        """Wait until it exits; return its exit status.

        :raises TimeoutError: it still runs after ``timeout`` seconds.
        """
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{self.command} still runs after {timeout:g} s") from None

    def stop(self, timeout: float = 30.0) -> int:
        """Ctrl-C, and ``SIGKILL`` if it has not exited within ``timeout`` seconds; remove its
        output file. Returns its exit status."""
        self.interrupt()
        try:
            code = self.wait(timeout)
        except TimeoutError:
            self.kill()
            code = self.wait(timeout)
        if self._kept is None:
            self._kept = self.output()
            self._log.unlink(missing_ok=True)
        return code
