"""``pgqueue-lab classroom``: a whole class on one PostgreSQL server, each student apart.

Every notebook keeps its jobs in a schema of a fixed name (``nb03_claiming``...) and its wake-ups
on a fixed ``LISTEN`` channel, so two students sharing one database break each other. Here each
student gets what a learner on their own machine has: a database of their own.

``create`` makes, per student, against the server in ``PGQUEUE_LAB_DSN`` (as a role that may
create roles and databases):

- a ``LOGIN`` role (``student01``...) with a random password, no other right, at most
  ``--connection-limit`` sessions, and ``idle_in_transaction_session_timeout`` set, so a
  forgotten open transaction ends by itself;
- a database of the same name, owned by the student, with ``CONNECT`` (and ``TEMPORARY``)
  revoked from ``PUBLIC``: other students cannot even connect to it. ``LISTEN``/``NOTIFY``
  channels are per database, so their wake-ups stay apart too;
- a comment on both (``pgqueue-lab classroom, prefix student``): ``drop`` removes only what
  carries it.

Before creating anything it checks that the server's ``max_connections`` covers the class. It
writes a roster (CSV ``student,dsn``, mode 0600) and prints it with the passwords masked.
Running it again keeps existing students and their passwords (read back from the roster) unless
``--reset-passwords``; it adds missing students and applies changed limits.

``list`` shows each student: sessions now, the notebook they are in (the one whose queue had the
latest job), which notebooks' schemas exist in their database (a notebook creates its schema
when it starts and drops it at its end), their jobs by status, and the age of their oldest
snapshot, marking the student who holds the class's oldest. ``watch`` redraws that table live
(with rich) until Ctrl-C. ``drop`` ends the students' sessions and removes their databases and
roles.

Everything read from a view of the whole server (``pg_stat_activity``) is limited to the
class's roles, so other classes and other users of the server neither show nor count. A
student's database is read logged in as that student (the roster's password), never as the
teacher: a query planned in a database the student owns can run the student's code
(:data:`STUDENT_SESSION_OPTIONS`).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import re
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..core import db, sql
from ..errors import ClassroomError, InvalidInputError, QueueError
from . import terminal

# -- statements (print one: ``print(classroom.CLASSROOM_RIGHTS)``) -------------------------------

#: May the connected role create roles and databases?
CLASSROOM_RIGHTS = """\
SELECT current_user, rolsuper, rolcreaterole, rolcreatedb
FROM pg_roles
WHERE rolname = current_user"""

#: The server's connection budget: ``max_connections``, the slots kept for superusers (and,
#: from PostgreSQL 16, for ``pg_use_reserved_connections``), and the connection limits of
#: classroom students of *other* prefixes (other classes on the same server).
CLASSROOM_CONNECTIONS = """\
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int
         + coalesce(current_setting('reserved_connections', true)::int, 0),
       (SELECT coalesce(sum(rolconnlimit), 0)::int FROM pg_roles
        WHERE starts_with(coalesce(shobj_description(oid, 'pg_authid'), ''), %(marker)s)
          AND shobj_description(oid, 'pg_authid') <> %(mark)s AND rolconnlimit > 0)"""

#: The students this prefix's ``create`` made (marked by their comment), with their database
#: (``NULL`` if missing), whether the database is theirs (marked, or owned by the student), and
#: the role's settings (``{idle_in_transaction_session_timeout=300s}``).
CLASSROOM_STUDENTS = """\
SELECT r.rolname, r.rolconnlimit, d.datname,
       d.datname IS NOT NULL AND (shobj_description(d.oid, 'pg_database') = %(mark)s
                                  OR d.datdba = r.oid) AS database_ours,
       (SELECT s.setconfig FROM pg_db_role_setting AS s
        WHERE s.setrole = r.oid AND s.setdatabase = 0) AS settings
FROM pg_roles AS r
LEFT JOIN pg_database AS d ON d.datname = r.rolname
WHERE shobj_description(r.oid, 'pg_authid') = %(mark)s
ORDER BY r.rolname"""

#: Roles and databases that already carry one of these names, and whether ``create`` made them.
CLASSROOM_NAMES_TAKEN = """\
SELECT 'role' AS kind, rolname AS name, coalesce(shobj_description(oid, 'pg_authid') = %(mark)s, false)
FROM pg_roles WHERE rolname = ANY(%(names)s)
UNION ALL
SELECT 'database', datname, coalesce(shobj_description(oid, 'pg_database') = %(mark)s, false)
       OR datdba IN (SELECT oid FROM pg_roles WHERE rolname = datname
                     AND shobj_description(oid, 'pg_authid') = %(mark)s)
FROM pg_database WHERE datname = ANY(%(names)s)
ORDER BY 2, 1"""

#: A student: may log in, nothing more, at most ``{limit}`` sessions at once.
CLASSROOM_CREATE_ROLE = """\
CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE
    PASSWORD {password} CONNECTION LIMIT {limit}"""

#: The mark ``drop`` looks for: it removes only what carries it.
CLASSROOM_MARK_ROLE = "COMMENT ON ROLE {role} IS {mark}"

#: A transaction left open ends after this long, so a forgotten one cannot hold its locks (or a
#: connection slot) for the rest of the lesson. Applies to the role's next sessions.
CLASSROOM_ROLE_TIMEOUT = "ALTER ROLE {role} SET idle_in_transaction_session_timeout = {timeout}"

CLASSROOM_ROLE_LIMIT = "ALTER ROLE {role} CONNECTION LIMIT {limit}"

CLASSROOM_SET_PASSWORD = "ALTER ROLE {role} PASSWORD {password}"

#: A teacher who is not a superuser must be a member of a student role to create a database
#: owned by it, and later to drop it (and may then look into the student's database).
CLASSROOM_JOIN_ROLE = "GRANT {role} TO CURRENT_USER"

#: The student's own database; its owner may do anything in it.
CLASSROOM_CREATE_DATABASE = "CREATE DATABASE {database} OWNER {role}"

CLASSROOM_MARK_DATABASE = "COMMENT ON DATABASE {database} IS {mark}"

#: Every role may connect to a new database (and create temporary tables in it) through
#: PUBLIC: take that away, so only its owner (and superusers) get in.
CLASSROOM_REVOKE_PUBLIC = "REVOKE CONNECT, TEMPORARY ON DATABASE {database} FROM PUBLIC"

#: Sessions of the students right now, per role (``pg_stat_activity`` is the whole server's:
#: only the class's roles are counted), and the student's session that holds back vacuum the
#: longest: the age of its snapshot or transaction id (transactions assigned since) and how
#: long its transaction has been open. A teacher who is a superuser or a member of the student
#: roles (``create`` makes them one) sees these columns; a student sees them only for their own
#: sessions. Each student's snapshot holds back the vacuum of their own database (and of the
#: shared catalogs), not the other students' jobs tables.
CLASSROOM_SESSIONS = """\
SELECT usename, count(*)::int,
       max(greatest(age(backend_xmin), age(backend_xid)))::int AS xmin_age,
       extract(epoch FROM now() - min(xact_start)
               FILTER (WHERE backend_xmin IS NOT NULL OR backend_xid IS NOT NULL))::float8 AS open_for
FROM pg_stat_activity
WHERE usename = ANY(%(roles)s) AND backend_type = 'client backend'
GROUP BY usename"""

#: No new logins while a class is dropped.
CLASSROOM_NOLOGIN = "ALTER ROLE {role} NOLOGIN"

#: End the students' sessions, wherever they are connected (waiting up to 5 s for each).
CLASSROOM_TERMINATE = """\
SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))::int
FROM pg_stat_activity
WHERE (usename = ANY(%(roles)s) OR datname = ANY(%(databases)s)) AND pid <> pg_backend_pid()"""

CLASSROOM_DROP_DATABASE = "DROP DATABASE IF EXISTS {database} WITH (FORCE)"

#: Privileges granted to the role, and objects it owns, in the database the teacher is connected
#: to (a role cannot be dropped while anything refers to it).
CLASSROOM_DROP_OWNED = "DROP OWNED BY {role}"

CLASSROOM_DROP_ROLE = "DROP ROLE IF EXISTS {role}"

#: In a student's database: the schemas of the course's notebooks (``nb03_claiming``...), which
#: each notebook creates when it starts and drops when it ends.
CLASSROOM_NOTEBOOK_SCHEMAS = """\
SELECT nspname FROM pg_namespace WHERE nspname ~ '^nb[0-9]{2}_' ORDER BY nspname"""

#: In a student's database: every schema holding a queue's ``jobs`` table: a plain table with
#: the ``status text`` and ``created_at timestamptz`` columns the course's queues have (a column
#: of another type would call another ``max``: only the course's queues are counted).
CLASSROOM_JOB_TABLES = """\
SELECT n.nspname
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_attribute AS a ON a.attrelid = c.oid AND a.attname = 'status' AND NOT a.attisdropped
                       AND a.atttypid = 'pg_catalog.text'::pg_catalog.regtype
JOIN pg_attribute AS t ON t.attrelid = c.oid AND t.attname = 'created_at' AND NOT t.attisdropped
                       AND t.atttypid = 'pg_catalog.timestamptz'::pg_catalog.regtype
WHERE c.relname = 'jobs' AND c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY n.nspname"""

#: Jobs per status in one queue, and when its last job of that status was enqueued (combined
#: with ``UNION ALL`` over a student's queues: the notebook whose queue was enqueued to last is
#: the one the student is in).
CLASSROOM_JOBS_BY_STATUS = """\
SELECT {name}::text, status::pg_catalog.text, pg_catalog.count(*)::int,
       pg_catalog.max(created_at)::pg_catalog.timestamptz
FROM ONLY {schema}.jobs GROUP BY status"""

#: The teacher's session in a student's database logs in as **the student** (their line of the
#: roster), never as the teacher. The student owns everything in that database, and a query
#: planned there can run the student's code: an ``IMMUTABLE`` function in a partial index's
#: condition is called while the planner simplifies it, whatever the ``search_path`` and even in a
#: read-only transaction. As a superuser that code could do anything (``COPY ... TO PROGRAM``);
#: as the student it can do only what the student can. The session also resolves names in
#: ``pg_catalog`` only, writes nothing, applies no row-level security, reads text as UTF-8 and
#: dates as ISO whatever the database's settings, and gives each statement 3 s (a lock 2 s).
STUDENT_SESSION_OPTIONS = (
    "-c search_path=pg_catalog -c row_security=off -c default_transaction_read_only=on "
    "-c default_transaction_isolation=read\\ committed -c default_transaction_deferrable=off "
    "-c client_encoding=UTF8 -c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC "
    "-c lock_timeout=2s -c statement_timeout=3s"
)
#: The name of that session in ``pg_stat_activity``. (Only a name: the sessions are counted
#: before any is opened, so nothing is left out by it, and a student who takes it hides nothing.)
TEACHER_VIEW = "pgqueue-lab classroom"
#: Seconds a student's database may take to be read, whatever it does: a function of the
#: student's that catches the statement timeout would otherwise hold the list forever. Past it,
#: the teacher's own session ends that backend (``pg_terminate_backend`` cannot be caught).
READ_DEADLINE = 10.0

#: End the teacher's read session in a student's database that overran :data:`READ_DEADLINE`.
CLASSROOM_END_READ = "SELECT pg_terminate_backend(%(pid)s, 1000)"


Connection = psycopg.Connection[Any]

DEFAULT_PREFIX = "student"
#: Sessions a student may hold at once: notebook 09 holds about 12 (8 worker threads, their
#: heartbeat, housekeeper and listener, the notebook's own); notebook 10 about 14 (two worker
#: processes of five sessions each, a producer, the live view, the notebook).
DEFAULT_CONNECTION_LIMIT = 16
#: The most connections one notebook holds at once: notebook 17 (12 producers, the watcher,
#: the listener, the notebook's own session). ``create`` warns below it.
NOTEBOOK_CONNECTIONS = 15
#: Seconds after which an idle open transaction is ended (the session with it).
DEFAULT_IDLE_TIMEOUT = 300
#: Connections kept free for the teacher (psql, ``classroom list``, a ``watch``) beyond the class.
TEACHER_CONNECTIONS = 10
MAX_STUDENTS = 999
#: The start of the comment ``create`` puts on each role and database it makes.
MARKER = "pgqueue-lab classroom, prefix "
ROSTER_HEADER = ("student", "dsn")
_PREFIX_RE = re.compile(r"[a-z][a-z0-9_]*")
_NOTEBOOK_SCHEMA = re.compile(r"nb[0-9]{2}_")
MAX_PREFIX_LENGTH = 40
#: ``classroom watch``: seconds between frames. Each frame connects to every student's
#: database in turn (one connection at a time), so it does not refresh faster than that takes.
DEFAULT_WATCH_INTERVAL = 2.0
MIN_WATCH_INTERVAL = 0.5
#: Seconds a snapshot has been open before ``list`` and ``watch`` point at it: a snapshot of a
#: statement running now is not news; one of half a minute is a transaction left open (the
#: role's idle timeout ends an idle one after 5 minutes).
SNAPSHOT_WARNING = 30.0


def mark(prefix: str) -> str:
    """The comment that marks a student role and database of this prefix."""
    return MARKER + prefix


def student_name(prefix: str, number: int) -> str:
    """``student01`` ... ``student99``, ``student100``: the role and its database."""
    return f"{prefix}{number:02d}"


def default_roster(prefix: str) -> Path:
    return Path(f"{prefix}-roster.csv")


@dataclass
class Student:
    """One student of the roster. ``dsn`` holds the password: print :attr:`masked_dsn`."""

    name: str
    dsn: str = field(repr=False)  # never shown by accident: it holds the password
    #: "created", "kept", "new password", "limits changed" or "database created"
    state: str = "kept"

    @property
    def masked_dsn(self) -> str:
        return db.mask_dsn(self.dsn)


@dataclass
class StudentState:
    """What ``classroom list`` shows of one student."""

    name: str
    sessions: int
    has_database: bool
    notebooks: list[str] | None = None  # None: the database could not be read (see unreadable)
    #: Why the database could not be read: "no roster" (no roster file), "no roster line",
    #: "timed out", "at its connection limit" or "unreadable".
    unreadable: str | None = None
    jobs: dict[str, int] = field(default_factory=dict)
    #: The notebook whose queue had the latest job (``"09"``); else the last one open; or None.
    current: str | None = None
    #: The age in transaction ids of the student's oldest snapshot (or transaction id), and for
    #: how many seconds its transaction has been open; None when no session holds one.
    snapshot_xids: int | None = None
    snapshot_seconds: float | None = None

    @property
    def connected(self) -> bool:
        return self.sessions > 0


# -- input -------------------------------------------------------------------------------------


def check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not _PREFIX_RE.fullmatch(prefix) or len(prefix) > MAX_PREFIX_LENGTH:
        raise InvalidInputError(
            f"invalid --prefix {prefix!r}: use lower-case letters, digits and '_', starting with a "
            f"letter, at most {MAX_PREFIX_LENGTH} characters"
        )
    return prefix


def _check_int(value: object, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInputError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
    return value


# -- the roster ----------------------------------------------------------------------------------


def student_dsn(teacher_dsn: str, name: str, password: str, host: str | None = None) -> str:
    """The DSN a student uses: the teacher's server (or ``host``), the student's role and database."""
    params = conninfo_to_dict(teacher_dsn)
    host = host or str(params.get("host") or "localhost")
    port = str(params.get("port") or "")
    query = {key: str(params[key]) for key in ("sslmode",) if params.get(key)}
    credentials = f"{quote(name, safe='')}:{quote(password, safe='')}@"
    if host.startswith("/"):  # a Unix socket directory (the embedded server)
        query = {"host": host, **({"port": port} if port else {}), **query}
        netloc = credentials
    else:
        netloc = credentials + (f"[{host}]" if ":" in host else host) + (f":{port}" if port else "")
    return f"postgresql://{netloc}/{quote(name, safe='')}" + (f"?{urlencode(query)}" if query else "")


def read_roster(path: Path) -> dict[str, str]:
    """``{student: password}`` from a roster this command wrote (``{}`` if there is none)."""
    if not path.exists():
        return {}
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ClassroomError(f"the roster {path} cannot be read: {exc}") from None
    if not rows or tuple(rows[0]) != ROSTER_HEADER:
        raise ClassroomError(
            f"{path} is not a roster (its first line should be {','.join(ROSTER_HEADER)}): "
            "give another --roster"
        )
    passwords: dict[str, str] = {}
    for row in rows[1:]:
        if len(row) != 2:
            continue
        try:
            params = conninfo_to_dict(row[1])
        except psycopg.ProgrammingError:
            continue
        if params.get("user") == row[0] and params.get("password"):
            passwords[row[0]] = str(params["password"])
    return passwords


def write_roster(path: Path, students: Sequence[Student]) -> None:
    """Write the roster, readable by its owner only (mode 0600), replacing any old one whole."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(ROSTER_HEADER)
            writer.writerows((s.name, s.dsn) for s in students)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- the server ----------------------------------------------------------------------------------


@contextmanager
def _refusals() -> Iterator[None]:
    """A statement the server refuses for lack of rights becomes one clear ClassroomError."""
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        reason = (str(exc).strip().splitlines() or ["permission denied"])[0]
        raise ClassroomError(
            f"the server refused: {reason}. pgqueue-lab classroom needs a superuser or a role with "
            "CREATEROLE and CREATEDB"
        ) from None


def _require_rights(conn: Connection) -> bool:
    """Check that the connected role may create roles and databases; return whether it is a
    superuser."""
    row = conn.execute(CLASSROOM_RIGHTS).fetchone()
    assert row is not None
    user, superuser, createrole, createdb = row
    if superuser or (createrole and createdb):
        return bool(superuser)
    missing = " and ".join(
        name for name, ok in (("CREATEROLE", createrole), ("CREATEDB", createdb)) if not ok
    )
    raise ClassroomError(
        f"the role {user!r} (from {db.DSN_ENV}) may not create roles and databases (it lacks "
        f"{missing}): connect as a superuser such as postgres, or give it the rights: "
        f"ALTER ROLE {user} CREATEROLE CREATEDB"
    )


@dataclass
class _Existing:
    limit: int
    database: str | None
    database_ours: bool
    config: list[str]


def _existing(conn: Connection, prefix: str) -> dict[str, _Existing]:
    rows = conn.execute(CLASSROOM_STUDENTS, {"mark": mark(prefix)}).fetchall()
    return {
        name: _Existing(int(limit), database, bool(ours), list(settings or []))
        for name, limit, database, ours, settings in rows
    }


def _number(prefix: str, name: str) -> int:
    digits = name[len(prefix) :]
    return int(digits) if digits.isdigit() else 0


def _check_connections(conn: Connection, prefix: str, students: int, limit: int, err: TextIO) -> None:
    row = conn.execute(CLASSROOM_CONNECTIONS, {"marker": MARKER, "mark": mark(prefix)}).fetchone()
    assert row is not None
    max_connections, reserved, others = (int(v) for v in row)
    class_total = students * limit
    need = class_total + others + reserved + TEACHER_CONNECTIONS
    other_text = f" + {others} for other classes on this server" if others else ""
    if need > max_connections:
        room = (max_connections - reserved - TEACHER_CONNECTIONS - others) // students
        lower = ""
        if NOTEBOOK_CONNECTIONS <= room < limit:
            lower = f", or give each student fewer: --connection-limit {room}"
        elif room < NOTEBOOK_CONNECTIONS:
            lower = (
                f" (a lower --connection-limit would not do: the course's notebooks need up to "
                f"{NOTEBOOK_CONNECTIONS} each)"
            )
        raise ClassroomError(
            f"{students} students x {limit} connections = {class_total}{other_text}, plus {reserved} "
            f"reserved and {TEACHER_CONNECTIONS} for you: the server needs max_connections >= {need}, "
            f"but it is {max_connections}. Raise it (docker-compose.yml sets 500; elsewhere ALTER SYSTEM SET "
            f"max_connections = {need}, then restart PostgreSQL){lower}"
        )
    print(
        f"connections: {students} students x {limit} = {class_total}{other_text}, of max_connections "
        f"{max_connections} ({reserved} reserved, {TEACHER_CONNECTIONS} kept for you)",
        file=err,
    )
    if limit < NOTEBOOK_CONNECTIONS:
        print(
            f"note: --connection-limit {limit} is below what the course's notebooks need: notebook 17 "
            f"holds {NOTEBOOK_CONNECTIONS} connections, 10 about 14, 09 about 12; those fail with "
            "'too many connections for role'",
            file=err,
        )


def _utility(statement: str, literals: dict[str, object] | None = None, **names: str) -> pgsql.Composed:
    return sql.compose_utility(statement, literals=literals, **names)


def _password_verifier(conn: Connection, role: str, password: str) -> str:
    """The password hashed by libpq the way the server wants it (``password_encryption``)."""
    return conn.pgconn.encrypt_password(password.encode(), role.encode(), None).decode()


# -- create --------------------------------------------------------------------------------------


def create(
    dsn: str,
    students: int,
    *,
    prefix: str = DEFAULT_PREFIX,
    roster: Path | None = None,
    reset_passwords: bool = False,
    connection_limit: int = DEFAULT_CONNECTION_LIMIT,
    idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
    host: str | None = None,
    err: TextIO | None = None,
) -> list[Student]:
    """Make (or keep) students 1..``students`` of ``prefix`` and write the roster.

    :returns: every student of the prefix, in order (with passwords: do not print ``dsn``).
    :raises ClassroomError: nothing was changed; the message says why and what to do.
    """
    err = err or sys.stderr
    prefix = check_prefix(prefix)
    students = _check_int(students, "--students", 1, MAX_STUDENTS)
    connection_limit = _check_int(connection_limit, "--connection-limit", 1, 10_000)
    idle_timeout = _check_int(idle_timeout, "--idle-timeout", 0, 86_400)
    roster = roster or default_roster(prefix)
    wanted = [student_name(prefix, n) for n in range(1, students + 1)]
    timeout_setting = f"idle_in_transaction_session_timeout={idle_timeout}s"
    with db.connect(dsn) as conn, _refusals():
        superuser = _require_rights(conn)
        existing = _existing(conn, prefix)
        taken = conn.execute(CLASSROOM_NAMES_TAKEN, {"mark": mark(prefix), "names": wanted}).fetchall()
        foreign = [f"{kind} {name}" for kind, name, ours in taken if not ours]
        if foreign:
            raise ClassroomError(
                f"{', '.join(foreign)} already exist(s) and pgqueue-lab classroom did not make them: "
                "choose another --prefix"
            )
        names = sorted(set(wanted) | set(existing), key=lambda n: _number(prefix, n))
        known = read_roster(roster)  # also refuses to overwrite a file that is not a roster
        if reset_passwords:
            known = {}
        lost = [name for name in names if name in existing and name not in known]
        if lost and not reset_passwords:
            shown = ", ".join(lost[:5]) + (f" and {len(lost) - 5} more" if len(lost) > 5 else "")
            raise ClassroomError(
                f"the passwords of {shown} are not in the roster {roster}: give the roster they are in "
                "with --roster, or new passwords to every student with --reset-passwords"
            )
        _check_connections(conn, prefix, len(names), connection_limit, err)
        result: list[Student] = []
        with terminal.bar("creating students", len(names)) as advance:
            for name in names:
                result.append(
                    _make_student(
                        conn,
                        name,
                        existing.get(name),
                        known.get(name),
                        mark=mark(prefix),
                        superuser=superuser,
                        limit=connection_limit,
                        timeout_setting=timeout_setting,
                        teacher_dsn=dsn,
                        host=host,
                    )
                )
                advance(1)
    write_roster(roster, result)
    return result


def _make_student(
    conn: Connection,
    name: str,
    existing: _Existing | None,
    password: str | None,
    *,
    mark: str,
    superuser: bool,
    limit: int,
    timeout_setting: str,
    teacher_dsn: str,
    host: str | None,
) -> Student:
    """Create what is missing of one student (role, database); keep what exists."""
    state = "kept"
    timeout = timeout_setting.split("=", 1)[1]
    if existing is None:
        password, state = secrets.token_urlsafe(12), "created"
        with conn.transaction():  # the role and its mark together: never an unmarked student
            verifier = _password_verifier(conn, name, password)
            literals: dict[str, object] = {"password": verifier, "limit": limit}
            conn.execute(_utility(CLASSROOM_CREATE_ROLE, literals, role=name))
            conn.execute(_utility(CLASSROOM_MARK_ROLE, {"mark": mark}, role=name))
            conn.execute(_utility(CLASSROOM_ROLE_TIMEOUT, {"timeout": timeout}, role=name))
            if not superuser:
                conn.execute(_utility(CLASSROOM_JOIN_ROLE, role=name))
    else:
        if password is None:  # --reset-passwords
            password, state = secrets.token_urlsafe(12), "new password"
            verifier = _password_verifier(conn, name, password)
            conn.execute(_utility(CLASSROOM_SET_PASSWORD, {"password": verifier}, role=name))
        if existing.limit != limit:
            conn.execute(_utility(CLASSROOM_ROLE_LIMIT, {"limit": limit}, role=name))
            state = "limits changed" if state == "kept" else state
        if timeout_setting not in existing.config:
            conn.execute(_utility(CLASSROOM_ROLE_TIMEOUT, {"timeout": timeout}, role=name))
            state = "limits changed" if state == "kept" else state
    if existing is None or existing.database is None:
        conn.execute(_utility(CLASSROOM_CREATE_DATABASE, database=name, role=name))
        with conn.transaction():
            conn.execute(_utility(CLASSROOM_MARK_DATABASE, {"mark": mark}, database=name))
            conn.execute(_utility(CLASSROOM_REVOKE_PUBLIC, database=name))
        if state == "kept":
            state = "database created"
    return Student(name, student_dsn(teacher_dsn, name, password, host), state)


# -- list ----------------------------------------------------------------------------------------


def list_students(dsn: str, prefix: str = DEFAULT_PREFIX, roster: Path | None = None) -> list[StudentState]:
    """Each student of ``prefix``: sessions now, the notebook they are in and those under way,
    jobs by status, and their oldest snapshot.

    Sessions and snapshots come from the teacher's own session (``pg_stat_activity``). The
    notebooks and jobs are read in each student's database in turn, logged in as the student
    with the password in ``roster`` (default ``PREFIX-roster.csv``): one connection at a time,
    and one of the student's for a moment; 5 s to connect, 3 s per statement, 10 s in all
    (:data:`READ_DEADLINE`). What could not be read says why in
    :attr:`StudentState.unreadable` (``no roster``, ``no roster line``, ``timed out``...).

    :raises ClassroomError: the role may not create roles and databases, or ``roster`` exists
        and is not a roster.
    """
    prefix = check_prefix(prefix)
    roster = roster or default_roster(prefix)
    passwords = read_roster(roster)
    missing = "no roster" if not roster.exists() else "no roster line"
    with db.connect(dsn) as conn, _refusals():
        _require_rights(conn)
        existing = _existing(conn, prefix)
        sessions = {
            name: (int(count), xmin_age, open_for)
            for name, count, xmin_age, open_for in conn.execute(
                CLASSROOM_SESSIONS, {"roles": list(existing)}
            ).fetchall()
        }
    states = []
    for name in sorted(existing, key=lambda n: _number(prefix, n)):
        info = existing[name]
        count, xmin_age, open_for = sessions.get(name, (0, None, None))
        state = StudentState(name, count, info.database is not None)
        state.snapshot_xids = None if xmin_age is None else int(xmin_age)
        state.snapshot_seconds = None if open_for is None else float(open_for)
        if info.database is not None and name not in passwords:
            state.unreadable = missing
        elif info.database is not None:
            student = make_conninfo(dsn, user=name, password=passwords[name], dbname=info.database)
            _read_progress(dsn, student, state)
        states.append(state)
    return states


def oldest_snapshot(states: Sequence[StudentState]) -> StudentState | None:
    """The student whose session holds the class's oldest snapshot (by age in transactions,
    then by time open), or None if no student holds one."""
    holding = [s for s in states if s.snapshot_xids is not None]
    if not holding:
        return None
    return max(holding, key=lambda s: (s.snapshot_xids or 0, s.snapshot_seconds or 0.0))


def _read_progress(teacher_dsn: str, student_dsn: str, state: StudentState) -> None:
    """Read a student's notebooks and jobs as the student, in one read-only transaction of a
    session set up by :data:`STUDENT_SESSION_OPTIONS`, within :data:`READ_DEADLINE` seconds.

    The student's database is theirs to break (a column changed between two statements, a
    function that never returns): whatever happens there makes this student ``(unreadable)``,
    ``(timed out)`` or ``(at its connection limit)``, never the whole list.
    """
    conninfo = make_conninfo(student_dsn, options=STUDENT_SESSION_OPTIONS, application_name=TEACHER_VIEW)
    timer: threading.Timer | None = None
    overran = threading.Event()
    try:
        with db.connect(conninfo, connect_timeout=5) as conn:
            timer = threading.Timer(READ_DEADLINE, _end_read, (teacher_dsn, conn.info.backend_pid, overran))
            timer.daemon = True
            timer.start()
            with conn.transaction():
                schemas, jobs, latest = _read_jobs(conn)
    except Exception as exc:  # noqa: BLE001 - a student's database is untrusted input
        state.notebooks = None
        if overran.is_set():
            state.unreadable = "timed out"
        elif "too many connections" in str(exc):
            state.unreadable = "at its connection limit"
        else:
            state.unreadable = "unreadable"
        return
    finally:
        if timer is not None:
            timer.cancel()
    state.notebooks = sorted({s[2:4] for s in schemas})
    state.jobs = jobs
    if latest:
        state.current = max(latest, key=lambda schema: (latest[schema], schema))[2:4]
    elif state.notebooks:
        state.current = state.notebooks[-1]


def _read_jobs(conn: Connection) -> tuple[list[str], dict[str, int], dict[str, datetime]]:
    """The notebook schemas, the jobs per status, and each notebook queue's latest job; every
    value checked for its type (what comes back is the student's)."""
    schemas = [str(r[0]) for r in conn.execute(CLASSROOM_NOTEBOOK_SCHEMAS).fetchall()]
    tables = [str(r[0]) for r in conn.execute(CLASSROOM_JOB_TABLES).fetchall()]
    jobs: dict[str, int] = {}
    latest: dict[str, datetime] = {}
    if tables:
        union = pgsql.SQL(" UNION ALL ").join(
            _utility(CLASSROOM_JOBS_BY_STATUS, {"name": schema}, schema=schema) for schema in tables
        )
        for schema, status, count, created in conn.execute(union).fetchall():
            if not (isinstance(status, str) and isinstance(count, int)):
                raise TypeError(f"unexpected row from {schema}.jobs")
            jobs[status] = jobs.get(status, 0) + count
            if isinstance(created, datetime) and _NOTEBOOK_SCHEMA.match(schema):
                latest[schema] = max(created, latest.get(schema, created))
    return schemas, jobs, latest


def _end_read(teacher_dsn: str, pid: int, overran: threading.Event) -> None:
    overran.set()
    try:
        with db.connect(teacher_dsn, connect_timeout=5) as conn:
            conn.execute(CLASSROOM_END_READ, {"pid": pid})
    except (psycopg.Error, QueueError):
        pass  # it ended by itself meanwhile, or the server is gone: the read fails either way


# -- drop ----------------------------------------------------------------------------------------


def drop(dsn: str, prefix: str = DEFAULT_PREFIX, *, confirm: Callable[[list[str]], bool]) -> list[str]:
    """End the students' sessions, drop their databases and roles. Returns the names dropped.

    :param confirm: called with the names before anything is changed; ``False`` cancels.
    :raises ClassroomError: a role could not be dropped (it owns objects in another database).
    """
    prefix = check_prefix(prefix)
    with db.connect(dsn) as conn, _refusals():
        superuser = _require_rights(conn)
        existing = _existing(conn, prefix)
        names = sorted(existing, key=lambda n: _number(prefix, n))
        if not names or not confirm(names):
            return []
        databases = [n for n in names if existing[n].database is not None and existing[n].database_ours]
        for name in names:
            conn.execute(_utility(CLASSROOM_NOLOGIN, role=name))
            if not superuser:  # a member of the role may drop its database and end its sessions
                conn.execute(_utility(CLASSROOM_JOIN_ROLE, role=name))
        conn.execute(CLASSROOM_TERMINATE, {"roles": names, "databases": databases})
        problems: list[str] = []
        dropped: list[str] = []
        with terminal.bar("dropping students", len(names)) as advance:
            for name in names:
                try:
                    if name in databases:
                        conn.execute(_utility(CLASSROOM_DROP_DATABASE, database=name))
                    with conn.transaction():
                        conn.execute(_utility(CLASSROOM_DROP_OWNED, role=name))
                        conn.execute(_utility(CLASSROOM_DROP_ROLE, role=name))
                    dropped.append(name)
                except psycopg.errors.DependentObjectsStillExist as exc:
                    detail = (exc.diag.message_detail or "").replace("\n", "; ")
                    problems.append(f"{name} ({detail or exc})")
                advance(1)
    if problems:
        raise ClassroomError(
            f"dropped {len(dropped)} of {len(names)} students; these roles still own objects in other "
            f"databases (drop or reassign them there, then run drop again): {', '.join(problems)}"
        )
    return dropped


# -- the command ---------------------------------------------------------------------------------


_ROSTER_HELP = (
    "the roster create wrote (default PREFIX-roster.csv): each student's database is read logged in "
    "as that student, never as you"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``classroom create|list|watch|drop`` and their options."""
    parser.description = (
        f"A class on one PostgreSQL server ({db.DSN_ENV}): per student a role and a database of their "
        "own. Needs a role that may create roles and databases."
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list,watch,drop}")
    create_parser = actions.add_parser(
        "create", help="make the students (again: keeps them), write the roster"
    )
    create_parser.add_argument("--students", type=int, required=True, metavar="N", help="how many students")
    create_parser.add_argument(
        "--prefix", default=DEFAULT_PREFIX, help="their names: PREFIX01, PREFIX02... (default %(default)s)"
    )
    create_parser.add_argument(
        "--roster",
        type=Path,
        metavar="FILE",
        help="the roster CSV (student,dsn; mode 0600); default PREFIX-roster.csv",
    )
    create_parser.add_argument(
        "--reset-passwords", action="store_true", help="new passwords for every student (existing ones too)"
    )
    create_parser.add_argument(
        "--connection-limit",
        type=int,
        default=DEFAULT_CONNECTION_LIMIT,
        metavar="N",
        help="sessions a student may hold at once (default %(default)s)",
    )
    create_parser.add_argument(
        "--idle-timeout",
        type=int,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="end a transaction left open and idle this long (default %(default)s; 0: never)",
    )
    create_parser.add_argument(
        "--host", help=f"host to write in the roster's DSNs (default: the host of {db.DSN_ENV})"
    )
    list_parser = actions.add_parser(
        "list", help="each student: connected now, the notebook they are in, jobs, oldest snapshot"
    )
    list_parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="which class (default %(default)s)")
    list_parser.add_argument("--roster", type=Path, metavar="FILE", help=_ROSTER_HELP)
    watch_parser = actions.add_parser("watch", help="the list, redrawn live until Ctrl-C (needs rich)")
    watch_parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="which class (default %(default)s)")
    watch_parser.add_argument("--roster", type=Path, metavar="FILE", help=_ROSTER_HELP)
    watch_parser.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_WATCH_INTERVAL,
        metavar="SECONDS",
        help=f"between frames (default %(default)g; at least {MIN_WATCH_INTERVAL:g})",
    )
    watch_parser.add_argument("--once", action="store_true", help="draw one frame and exit")
    drop_parser = actions.add_parser(
        "drop", help="end the students' sessions, drop their databases and roles"
    )
    drop_parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="which class (default %(default)s)")
    drop_parser.add_argument("--yes", action="store_true", help="do not ask first")


def main(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    dsn = db.get_dsn()
    if args.action == "create":
        if db.source() == "embedded":
            print(
                "note: the embedded server listens only on a socket private to your Unix account: "
                "students elsewhere cannot reach it (fine for a rehearsal). For a class, set "
                f"{db.DSN_ENV} to a server they can reach.",
                file=err,
            )
        roster = args.roster or default_roster(args.prefix)
        students = create(
            dsn,
            args.students,
            prefix=args.prefix,
            roster=roster,
            reset_passwords=args.reset_passwords,
            connection_limit=args.connection_limit,
            idle_timeout=args.idle_timeout,
            host=args.host,
            err=err,
        )
        _print_roster(students, roster, out)
        return 0
    if args.action == "list":
        states = list_students(dsn, args.prefix, args.roster)
        _warn_without_roster(args, err)
        _print_list(states, args.prefix, out)
        return 0
    if args.action == "watch":
        return _watch_main(dsn, args, out, err)
    return _drop_main(dsn, args, out)


def _warn_without_roster(args: argparse.Namespace, err: TextIO) -> None:
    roster = args.roster or default_roster(check_prefix(args.prefix))
    if not roster.exists():
        print(
            f"note: no roster {roster} here: sessions and snapshots are shown, but each student's "
            "notebooks and jobs are read logged in as the student: run this where the roster is, or "
            "give --roster FILE",
            file=err,
        )


def _watch_main(dsn: str, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``classroom watch``: the list redrawn in place every ``--interval`` seconds until Ctrl-C."""
    prefix = check_prefix(args.prefix)
    interval = args.interval
    if not (isinstance(interval, float) and math.isfinite(interval) and interval >= MIN_WATCH_INTERVAL):
        raise InvalidInputError(
            f"--interval must be at least {MIN_WATCH_INTERVAL:g} seconds, got {interval:g}"
        )
    try:
        from rich.console import Console
        from rich.live import Live
    except ImportError:
        raise ClassroomError(
            "pgqueue-lab classroom watch draws with rich: pip install 'pgqueue-lab[classroom]'"
        ) from None
    console = Console(file=out, width=None if out.isatty() else 200)  # a pipe, a log: no truncation
    states = list_students(dsn, prefix, args.roster)
    _warn_without_roster(args, err)
    if args.once:
        console.print(renderable(states, prefix, interval=None))
        return 0
    frame = renderable(states, prefix, interval=interval)
    try:
        with Live(frame, console=console, auto_refresh=False) as view:
            while True:
                time.sleep(interval)
                view.update(
                    renderable(list_students(dsn, prefix, args.roster), prefix, interval=interval),
                    refresh=True,
                )
    except KeyboardInterrupt:
        pass
    return 0


def _print_roster(students: Sequence[Student], roster: Path, out: TextIO) -> None:
    width = max(len("student"), *(len(s.name) for s in students))
    print(f"{'student':<{width}}  {'state':<16}  dsn (password masked)", file=out)
    for s in students:
        print(f"{s.name:<{width}}  {s.state:<16}  {s.masked_dsn}", file=out)
    counts = {state: sum(s.state == state for s in students) for state in ("created", "new password")}
    kept = len(students) - sum(counts.values())
    print(
        f"{len(students)} students: {counts['created']} created, {kept} kept, "
        f"{counts['new password']} given a new password. Roster with passwords: {roster} (mode 0600); "
        "give each student their line.",
        file=out,
    )


def _seconds(value: float) -> str:
    value = max(value, 0.0)  # a transaction begun after the teacher's own: no "-0 s"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.0f} min"


def stale(state: StudentState | None, after: float = SNAPSHOT_WARNING) -> bool:
    """Has this student's snapshot been open ``after`` seconds or more (worth the teacher's eye)?"""
    return state is not None and (state.snapshot_seconds or 0.0) >= after


def table(
    states: Sequence[StudentState], *, warn_after: float = SNAPSHOT_WARNING
) -> tuple[list[str], list[list[str]]]:
    """The class as a table: a header and one row of text per student (``list`` prints it,
    ``watch`` draws it). The student holding the class's oldest snapshot is marked ``<- oldest``
    once it has been open ``warn_after`` seconds (a snapshot of a running statement is not news).
    Jobs of a database that could not be read show ``?``."""
    oldest = oldest_snapshot(states)
    header = ["student", "sessions", "now", "notebooks", *sql.STATUSES, "oldest snapshot"]
    rows = []
    for s in states:
        if not s.has_database:
            notebooks = "(no database)"
        elif s.notebooks is None:
            notebooks = f"({s.unreadable or 'unreadable'})"
        else:
            notebooks = " ".join(s.notebooks) or "-"
        snapshot = "-"
        if s.snapshot_xids is not None:
            snapshot = f"age {s.snapshot_xids}"
            if s.snapshot_seconds is not None:
                snapshot += f", open {_seconds(s.snapshot_seconds)}"
            if s is oldest and stale(s, warn_after):
                snapshot += " <- oldest"
        unknown = s.has_database and s.notebooks is None
        jobs = ["?" if unknown else str(s.jobs.get(status, 0)) for status in sql.STATUSES]
        rows.append([s.name, str(s.sessions), s.current or "-", notebooks, *jobs, snapshot])
    return header, rows


def summary(states: Sequence[StudentState]) -> str:
    """One line under the table: how many are connected, who holds the oldest snapshot."""
    connected = sum(s.connected for s in states)
    oldest = oldest_snapshot(states)
    held = "no student holds a snapshot"
    if oldest is not None:
        n = oldest.snapshot_xids
        held = (
            f"{oldest.name} holds the class's oldest snapshot ({n} transaction{'' if n == 1 else 's'} since"
        )
        if oldest.snapshot_seconds is not None:
            held += f", open {_seconds(oldest.snapshot_seconds)}"
        held += ")"
    return f"{len(states)} students, {connected} connected now; {held}."


def _print_list(states: Sequence[StudentState], prefix: str, out: TextIO) -> None:
    if not states:
        print(f"no students with prefix {prefix!r} on this server", file=out)
        return
    header, rows = table(states)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    left = {0, 2, 3, len(header) - 1}
    for row in [header, *rows]:
        cells = [
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells).rstrip(), file=out)
    print(summary(states), file=out)
    print("now: the notebook whose queue had the latest job. notebooks: the course's schemas", file=out)
    print("in their database (each notebook drops its own at its end).", file=out)


def renderable(states: Sequence[StudentState], prefix: str, *, interval: float | None) -> Any:
    """The class as a ``rich`` renderable (rich must be installed): ``classroom watch``'s frame."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    live = f" · every {interval:g} s · Ctrl-C stops" if interval is not None else ""
    title = Text.assemble(("pgqueue-lab classroom", "bold"), f" · prefix {prefix}{live}")
    _, rows = table(states)
    # Narrower than list's: the jobs in one column (the statuses that have any), so that the
    # names stay whole in an 80-column terminal; the lists wrap.
    view = Table(box=box.SIMPLE_HEAD, padding=(0, 1))
    names = max([len("student"), *(len(s.name) for s in states)])
    view.add_column("student", no_wrap=True, min_width=names)
    view.add_column("sessions", justify="right", no_wrap=True)
    view.add_column("now", no_wrap=True)
    view.add_column("notebooks", ratio=1)
    view.add_column("jobs", ratio=2)
    view.add_column("oldest snapshot", ratio=2)
    oldest = oldest_snapshot(states)
    for s, row in zip(states, rows, strict=True):
        # a no-break space inside "90 pending": the cell wraps between counts, never inside one
        jobs = ", ".join(f"{s.jobs[status]}\u00a0{status}" for status in sql.STATUSES if s.jobs.get(status))
        if s.has_database and s.notebooks is None:
            jobs = "?"
        style = "dim" if not s.connected else ("bold red" if s is oldest and stale(s) else "")
        snapshot = row[-1].replace(" ", "\u00a0").replace(",\u00a0", ", ")
        view.add_row(row[0], row[1], row[2], row[3], jobs or "-", snapshot, style=style)
    if not states:
        return Group(title, Text(f"no students with prefix {prefix!r} on this server"))
    return Group(title, view, Text(summary(states)))


def _drop_main(dsn: str, args: argparse.Namespace, out: TextIO) -> int:
    def confirm(names: list[str]) -> bool:
        what = (
            f"{len(names)} students of prefix {args.prefix!r} ({names[0]}..{names[-1]}): roles and databases"
        )
        if args.yes:
            return True
        if not sys.stdin.isatty():
            raise InvalidInputError(f"drop would remove {what}; add --yes to do it without being asked")
        answer = input(f"Drop {what}, their work included? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    dropped = drop(dsn, args.prefix, confirm=confirm)
    if not dropped:
        print(f"nothing dropped (no students with prefix {args.prefix!r}, or cancelled)", file=out)
        return 0
    print(
        f"dropped {len(dropped)} students ({dropped[0]}..{dropped[-1]}): their sessions, databases and "
        f"roles. Their roster file is now useless: delete it ({default_roster(args.prefix)} unless you "
        "chose another).",
        file=out,
    )
    return 0
