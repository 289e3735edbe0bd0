"""``pgqueue-lab classroom`` against the run's real server: two students, each in a world of their own.

Every class made here has a prefix unique to the run (``pgqlab_test_<random>_``), so two test runs
on one server never meet, and the fixtures remove its roles and databases with plain SQL in a
``finally`` even when the command under test is broken. The run's role must be allowed to create
roles and databases (CI's server and the embedded one are superusers); otherwise these tests skip.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from pgqueue_lab import Queue, classroom, db
from pgqueue_lab.tools import pytest_plugin

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
PACKAGE = ROOT / "pgqueue_lab"
EMBEDDED = bool(os.environ.get(pytest_plugin.EMBEDDED_FLAG))
RIGHTS = "SELECT rolsuper, rolcreaterole AND rolcreatedb FROM pg_roles WHERE rolname = current_user"


def _cli(*args: str, dsn: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m pgqueue_lab ARGS`` with ``PGQUEUE_LAB_DSN=dsn``, stdin not a terminal."""
    return subprocess.run(
        [sys.executable, "-m", "pgqueue_lab", *args],
        cwd=cwd,
        env={**os.environ, db.DSN_ENV: dsn},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgqueue-lab: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _like(prefix: str) -> str:
    return prefix.replace("_", r"\_") + "%"


def _remove_everything(dsn: str, prefix: str) -> None:
    """Drop every role and database named ``prefix...``, without the code under test."""
    with db.connect(dsn) as conn:
        roles = [
            r[0] for r in conn.execute("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [_like(prefix)])
        ]
        dbs = [
            r[0]
            for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [_like(prefix)])
        ]
        conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE (usename = ANY(%s) OR datname = ANY(%s)) AND pid <> pg_backend_pid()",
            [roles, dbs],
        )
        for name in dbs:
            conn.execute(pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name)))
        for name in roles:
            conn.execute(pgsql.SQL("DROP OWNED BY {}").format(pgsql.Identifier(name)))
            conn.execute(pgsql.SQL("DROP ROLE IF EXISTS {}").format(pgsql.Identifier(name)))


def _leftovers(dsn: str, prefix: str) -> list[str]:
    with db.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT 'role ' || rolname FROM pg_roles WHERE rolname LIKE %(p)s "
            "UNION ALL SELECT 'database ' || datname FROM pg_database WHERE datname LIKE %(p)s ORDER BY 1",
            {"p": _like(prefix)},
        ).fetchall()
    return [r[0] for r in rows]


def _prefix() -> str:
    return f"pgqlab_test_{uuid.uuid4().hex[:8]}_"


@pytest.fixture(scope="module")
def teacher(dsn: str) -> str:
    with db.connect(dsn) as conn:
        row = conn.execute(RIGHTS).fetchone()
    if not (row and (row[0] or row[1])):
        pytest.skip("the run's database role may not create roles and databases")
    return dsn


@dataclass
class Class:
    prefix: str
    roster: Path
    created: subprocess.CompletedProcess[str]

    def dsns(self) -> dict[str, str]:
        with self.roster.open(newline="") as f:
            return {row["student"]: row["dsn"] for row in csv.DictReader(f)}

    def names(self) -> list[str]:
        return sorted(self.dsns())


@contextmanager
def _a_class(teacher: str, folder: Path, students: int) -> Iterator[Class]:
    """A class made by the command, with a prefix of its own; removed afterwards whatever happens."""
    prefix = _prefix()
    try:
        created = _cli(
            "classroom", "create", "--students", str(students), "--prefix", prefix, dsn=teacher, cwd=folder
        )
        assert created.returncode == 0, created.stderr
        yield Class(prefix, folder / f"{prefix}-roster.csv", created)
    finally:
        _remove_everything(teacher, prefix)


@pytest.fixture(scope="module")
def two_students(teacher: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Class]:
    with _a_class(teacher, tmp_path_factory.mktemp("classroom"), 2) as made:
        yield made


@pytest.fixture
def prefix(teacher: str) -> Iterator[str]:
    """A fresh prefix for a test of its own; whatever it made is removed afterwards."""
    value = _prefix()
    try:
        yield value
    finally:
        _remove_everything(teacher, value)


# -- create ------------------------------------------------------------------------------------


def test_create_makes_two_students_and_a_private_roster(teacher: str, two_students: Class) -> None:
    roster = two_students.roster
    assert stat.S_IMODE(roster.stat().st_mode) == 0o600
    assert roster.read_text().splitlines()[0] == "student,dsn"
    dsns = two_students.dsns()
    names = [f"{two_students.prefix}01", f"{two_students.prefix}02"]
    assert sorted(dsns) == names
    teacher_params = conninfo_to_dict(teacher)
    passwords = []
    for name, dsn in dsns.items():
        params = conninfo_to_dict(dsn)
        assert (params["user"], params["dbname"]) == (name, name)
        assert params.get("host") == teacher_params.get("host") and params.get("port") == teacher_params.get(
            "port"
        )
        passwords.append(str(params["password"]))
    assert len(set(passwords)) == 2 and all(len(p) >= 16 for p in passwords)
    out = two_students.created.stdout + two_students.created.stderr
    assert not any(p in out for p in passwords), "a password was printed"
    assert out.count(":***@") == 2 and "2 created" in out
    with db.connect(teacher) as conn:
        rows = conn.execute(
            "SELECT r.rolname, r.rolcanlogin, r.rolsuper OR r.rolcreatedb OR r.rolcreaterole, "
            "       r.rolconnlimit, d.datdba = r.oid, has_database_privilege('public', d.oid, 'CONNECT'), "
            "       shobj_description(r.oid, 'pg_authid'), s.setconfig "
            "FROM pg_roles r JOIN pg_database d ON d.datname = r.rolname "
            "LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 "
            "WHERE r.rolname = ANY(%s) ORDER BY 1",
            [names],
        ).fetchall()
    mark = f"pgqueue-lab classroom, prefix {two_students.prefix}"
    limit, timeout = classroom.DEFAULT_CONNECTION_LIMIT, classroom.DEFAULT_IDLE_TIMEOUT
    expected = [
        (n, True, False, limit, True, False, mark, [f"idle_in_transaction_session_timeout={timeout}s"])
        for n in names
    ]
    assert [tuple(r) for r in rows] == expected


def test_a_student_cannot_connect_to_another_students_database(two_students: Class) -> None:
    dsns = two_students.dsns()
    first, second = two_students.names()
    other = conninfo_to_dict(dsns[first]) | {"dbname": second}
    with pytest.raises(psycopg.OperationalError, match="CONNECT privilege"):
        psycopg.connect(**other, connect_timeout=10).close()
    with psycopg.connect(dsns[first], autocommit=True) as conn:
        assert conn.execute("SELECT current_user, current_database()").fetchone() == (first, first)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE ROLE pgqlab_should_never_exist")


def test_a_student_cannot_see_another_students_tables(two_students: Class) -> None:
    dsns = two_students.dsns()
    first, second = two_students.names()
    with psycopg.connect(dsns[second], autocommit=True) as conn:
        conn.execute("CREATE TABLE secret_answers (answer int)")
    with psycopg.connect(dsns[first], autocommit=True) as conn:
        seen = conn.execute("SELECT count(*) FROM pg_class WHERE relname = 'secret_answers'").fetchone()
        assert seen == (0,)
        query = pgsql.SQL("SELECT * FROM {}.public.secret_answers").format(pgsql.Identifier(second))
        with pytest.raises(psycopg.errors.FeatureNotSupported, match="cross-database"):
            conn.execute(query)


def test_a_student_never_receives_another_students_notifications(two_students: Class) -> None:
    dsns = two_students.dsns()
    first, second = two_students.names()
    channel = "nb04_pubsub_jobs"  # the same channel name in both databases
    with (
        psycopg.connect(dsns[first], autocommit=True) as listener,
        psycopg.connect(dsns[second], autocommit=True) as other,
        psycopg.connect(dsns[first], autocommit=True) as own,
    ):
        listener.execute(pgsql.SQL("LISTEN {}").format(pgsql.Identifier(channel)))
        other.execute("SELECT pg_notify(%s, 'from the other student')", [channel])
        own.execute("SELECT pg_notify(%s, 'from my own database')", [channel])
        received = [n.payload for n in listener.notifies(timeout=1.0)]
    assert received == ["from my own database"]


def test_a_student_sees_neither_the_query_nor_the_state_of_another_students_session(
    teacher: str, two_students: Class
) -> None:
    dsns = two_students.dsns()
    first, second = two_students.names()
    secret = f"the answer of {second} {uuid.uuid4().hex}"
    see = "SELECT usename, datname, query, state, backend_xmin FROM pg_stat_activity WHERE pid = %s"
    with (
        psycopg.connect(dsns[second], autocommit=True) as other,
        psycopg.connect(dsns[first], autocommit=True) as student,
        db.connect(teacher) as teacher_conn,
    ):
        other.execute(pgsql.SQL("SELECT {}").format(pgsql.Literal(secret)))
        seen_by_teacher = teacher_conn.execute(see, [other.info.backend_pid]).fetchone()
        seen_by_student = student.execute(see, [other.info.backend_pid]).fetchone()
        own = student.execute(see, [student.info.backend_pid]).fetchone()
    assert seen_by_teacher is not None and secret in seen_by_teacher[2]  # the text is there to see
    assert seen_by_student == (second, second, "<insufficient privilege>", None, None)
    assert own is not None and own[2] == see.replace("%s", "$1") and own[3] == "active"  # their own


def test_a_student_cannot_read_another_students_jobs(two_students: Class) -> None:
    dsns = two_students.dsns()
    first, second = two_students.names()
    queue = Queue("nb05_final_status")
    with db.connect(dsns[second]) as other:
        queue.create(other)
        queue.enqueue(other, "email", {"secret": "of the second student"})
        try:
            with db.connect(dsns[first]) as student:
                mine = student.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = %s", [queue.schema]
                ).fetchone()
                stranger = pgsql.SQL("SELECT payload FROM {}.{}.jobs").format(
                    pgsql.Identifier(second), pgsql.Identifier(queue.schema)
                )
                with pytest.raises(psycopg.errors.FeatureNotSupported, match="cross-database"):
                    student.execute(stranger)
            assert mine == (0,)  # the same schema name in their own database: not there
            assert [job["payload"] for job in queue.jobs(other)] == [{"secret": "of the second student"}]
        finally:
            queue.drop(other)


def test_no_password_in_what_the_commands_print_or_the_server_keeps(
    teacher: str, two_students: Class
) -> None:
    passwords = [str(conninfo_to_dict(dsn)["password"]) for dsn in two_students.dsns().values()]
    assert all(len(pw) >= 16 for pw in passwords)
    cwd = two_students.roster.parent
    printed = [
        two_students.created.stdout + two_students.created.stderr,
        *(
            r.stdout + r.stderr
            for r in (
                _cli("classroom", "list", "--prefix", two_students.prefix, dsn=teacher, cwd=cwd),
                _cli("classroom", "watch", "--once", "--prefix", two_students.prefix, dsn=teacher, cwd=cwd),
            )
        ),
    ]
    assert all("***" in text or "connected now" in text for text in printed)
    assert [pw for pw in passwords for text in printed if pw in text] == []
    with db.connect(teacher) as conn:
        if conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() != (True,):
            return
        stored = [
            r[0]
            for r in conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname = ANY(%s)", [two_students.names()]
            )
        ]
    # the server got (and would have logged, with log_statement = all) a verifier, not the password
    assert len(stored) == 2 and all(v.startswith(("SCRAM-SHA-256$", "md5")) for v in stored)
    assert [pw for pw in passwords for v in stored if pw in v] == []


#: A student's traps for the teacher, in the student's own database (they own it): an
#: aggregate ``max`` of their own, found first through the database's ``search_path``, and a
#: ``jobs`` table whose ``created_at`` is of a type of theirs (so ``max(created_at)`` is theirs
#: whatever the path). Each records who called it: if that is the teacher, the student's code
#: ran with the teacher's rights (a superuser's: it could have made its owner one).
TRAPS = """
CREATE FUNCTION public.trap_record() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('caught', current_user);  -- allowed in a read-only transaction, too
    RETURN true;
END $$;
CREATE FUNCTION public.trap_step(timestamptz, timestamptz) RETURNS timestamptz
    LANGUAGE sql AS $$ SELECT CASE WHEN public.trap_record() THEN greatest($1, $2) END $$;
CREATE AGGREGATE public.max(timestamptz) (sfunc = public.trap_step, stype = timestamptz);
CREATE FUNCTION public.trap_planned(int) RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN public.trap_record();
END $$;
CREATE SCHEMA nb97_trap;
CREATE TABLE nb97_trap.jobs (status text, created_at timestamptz);
INSERT INTO nb97_trap.jobs VALUES ('pending', now()), ('completed', NULL);
CREATE INDEX ON nb97_trap.jobs (status) WHERE public.trap_planned(1);
"""


def test_the_teachers_list_runs_no_code_of_a_student_with_the_teachers_rights(
    teacher: str, two_students: Class
) -> None:
    """``classroom list`` and ``watch`` read each student's database. What a student planted
    there (an aggregate ``max`` found first through the database's ``search_path``; an
    IMMUTABLE function in a partial index's condition, which the planner calls; settings that
    break a client's parsing) never runs as the teacher, and one student's broken database
    leaves the other rows (and the command) whole."""
    first, second = two_students.names()
    dsn = two_students.dsns()[first]
    settings = ["search_path = public, pg_catalog", "DateStyle = 'SQL, DMY'", "client_encoding = SQL_ASCII"]
    with psycopg.connect(dsn, autocommit=True) as student:
        for setting in settings:
            student.execute(pgsql.SQL("ALTER DATABASE {} SET " + setting).format(pgsql.Identifier(first)))
        student.execute(TRAPS)
    watcher = psycopg.connect(dsn, autocommit=True, client_encoding="UTF8")
    try:
        watcher.execute("LISTEN caught")  # who ran the student's code: its notifications say
        with psycopg.connect(dsn, autocommit=True, client_encoding="UTF8") as student:  # new sessions
            student.execute("SELECT max(created_at) FROM nb97_trap.jobs WHERE status = 'pending'")
        assert {n.payload for n in watcher.notifies(timeout=1)} == {first}  # armed
        with db.connect(two_students.dsns()[second]) as other:
            Queue("nb05_final_status").create(other)
            Queue("nb05_final_status").enqueue(other, "email", {})
        states = {
            s.name: s for s in classroom.list_students(teacher, two_students.prefix, two_students.roster)
        }
        cwd = two_students.roster.parent
        listed = _cli("classroom", "list", "--prefix", two_students.prefix, dsn=teacher, cwd=cwd)
        watched = _cli("classroom", "watch", "--once", "--prefix", two_students.prefix, dsn=teacher, cwd=cwd)
        caught = {n.payload for n in watcher.notifies(timeout=1)}
        rights = watcher.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        with db.connect(teacher) as conn:
            teacher_role = conn.execute("SELECT current_user").fetchone()
        assert teacher_role is not None and teacher_role[0] not in caught
        assert caught <= {first}  # run as the student, if at all
        assert rights == (False,)
        assert listed.returncode == 0 and watched.returncode == 0, listed.stderr + watched.stderr
        assert "Traceback" not in listed.stderr + watched.stderr
        assert states[second].jobs == {"pending": 1} and states[second].current == "05"
        assert states[first].notebooks is None or states[first].jobs == {"pending": 1, "completed": 1}
    finally:
        watcher.close()
        with psycopg.connect(dsn, autocommit=True) as student:
            student.execute(pgsql.SQL("ALTER DATABASE {} RESET ALL").format(pgsql.Identifier(first)))
            student.execute(
                "DROP SCHEMA nb97_trap CASCADE; DROP AGGREGATE public.max(timestamptz); "
                "DROP FUNCTION public.trap_step, public.trap_planned, public.trap_record"
            )
        with db.connect(two_students.dsns()[second]) as other:
            Queue("nb05_final_status").drop(other)


#: A student's function that never returns when the teacher's list reads their database: it
#: catches the statement timeout (a cancel) and goes on, up to a minute.
HANG = """
CREATE FUNCTION public.hang() RETURNS boolean LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    began timestamptz := clock_timestamp();
BEGIN
    WHILE current_setting('application_name') = 'pgqueue-lab classroom'
          AND clock_timestamp() < began + interval '60 seconds' LOOP
        BEGIN
            PERFORM pg_sleep(0.2);
        EXCEPTION WHEN query_canceled THEN
            NULL;
        END;
    END LOOP;
    RETURN true;
END $$;
CREATE SCHEMA nb96_hang;
CREATE TABLE nb96_hang.jobs (status text, created_at timestamptz);
INSERT INTO nb96_hang.jobs VALUES ('pending', now());
CREATE INDEX ON nb96_hang.jobs (status) WHERE public.hang();
"""


def test_a_student_can_neither_hold_the_list_nor_hide_from_it(
    teacher: str, two_students: Class, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A function of the student's that catches every cancel cannot hold the teacher's list:
    past the deadline the teacher's own session ends that backend, the row reads ``(timed
    out)`` and the others' rows are whole. A session named like the teacher's read is counted,
    with its snapshot, like any other."""
    monkeypatch.setattr(classroom, "READ_DEADLINE", 2.0)
    first, second = two_students.names()
    dsn = two_students.dsns()[first]
    with psycopg.connect(dsn, autocommit=True) as student:
        student.execute(HANG)
    hiding = psycopg.connect(dsn, application_name=classroom.TEACHER_VIEW)
    try:
        hiding.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        hiding.execute("SELECT 1")
        with db.connect(two_students.dsns()[second]) as other:
            Queue("nb05_final_status").create(other)
            Queue("nb05_final_status").enqueue(other, "email", {})
        began = time.monotonic()
        states = {
            s.name: s for s in classroom.list_students(teacher, two_students.prefix, two_students.roster)
        }
        took = time.monotonic() - began
        assert took < 10, took  # 60 s without the deadline
        assert (states[first].notebooks, states[first].unreadable) == (None, "timed out")
        assert states[first].sessions == 1 and states[first].snapshot_xids is not None  # not hidden
        assert states[second].jobs == {"pending": 1} and states[second].unreadable is None
        with db.connect(teacher) as conn:
            left = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = %s AND state = 'active'", [first]
            ).fetchone()
        assert left == (0,)  # the read's backend is gone, not still looping
    finally:
        hiding.close()
        with psycopg.connect(dsn, autocommit=True) as student:
            student.execute("DROP SCHEMA nb96_hang CASCADE; DROP FUNCTION public.hang")
        with db.connect(two_students.dsns()[second]) as other:
            Queue("nb05_final_status").drop(other)


def test_the_teachers_list_needs_the_roster_to_look_inside(
    teacher: str, two_students: Class, tmp_path: Path
) -> None:
    """Without the roster the teacher still sees sessions and snapshots, is told which file is
    missing, and sees ``?`` for jobs it could not count (each database is read only as its
    student), not zeros."""
    listed = _cli("classroom", "list", "--prefix", two_students.prefix, dsn=teacher, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert f"note: no roster {two_students.prefix}-roster.csv here" in listed.stderr
    assert "--roster FILE" in listed.stderr
    rows = [line.split() for line in listed.stdout.splitlines()[1:3]]
    assert [row[3:5] for row in rows] == [["(no", "roster)"]] * 2
    assert [row[5:10] for row in rows] == [["?"] * 5] * 2


def test_a_student_at_their_connection_limit_is_told_so(teacher: str, prefix: str, tmp_path: Path) -> None:
    made = _cli(
        "classroom", "create", "--students", "1", "--prefix", prefix, "--connection-limit", "1",
        dsn=teacher, cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "--connection-limit 1 is below what the course's notebooks need: notebook 17" in made.stderr
    with (tmp_path / f"{prefix}-roster.csv").open(newline="") as f:
        student_dsn = next(csv.DictReader(f))["dsn"]
    with db.connect(student_dsn), pytest.raises(db.DatabaseUnavailableError) as refused:
        db.connect(student_dsn)
    message = str(refused.value)
    assert "too many connections for role" in message and "takes no more connections" in message
    assert "start that server" not in message  # it is running: the old hint misled
    assert str(conninfo_to_dict(student_dsn)["password"]) not in message
    again = _cli("classroom", "create", "--students", "1", "--prefix", prefix, dsn=teacher, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{prefix}01" in again.stdout and "limits changed" in again.stdout
    assert "below what the course's notebooks need" not in again.stderr


# -- a whole class, every notebook, at once ------------------------------------------------------

#: A query of a view of the whole server: every session of every database (pg_stat_activity),
#: every lock (pg_locks).
SERVER_WIDE = re.compile(r"\b(?:FROM|JOIN)\s+pg_(?:stat_activity|locks)\b", re.IGNORECASE)
#: What limits it to what the user is meant to see: this database, a session of one's own (by
#: pid), the class's roles (the teacher's commands).
LIMITED = re.compile(
    r"datname\s*=\s*current_database\(\)|\bpid\s*=\s*(?:%|any\s*\()|usename\s*=\s*any\s*\(",
    re.IGNORECASE,
)


def _server_wide_queries(source: str) -> list[str]:
    """The string constants of Python source that query a server-wide view."""
    tree = ast.parse(source)
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and SERVER_WIDE.search(node.value)
    ]


def _code_cells(notebook: Path) -> Iterator[tuple[int, str]]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    for number, cell in enumerate(cells):
        if cell["cell_type"] == "code":
            lines = "".join(cell["source"]).splitlines()
            yield number, "\n".join(line for line in lines if not line.lstrip().startswith(("%", "!")))


def test_every_query_of_a_server_wide_view_is_limited_to_what_its_user_may_see() -> None:
    """With 30 students on one server, a query of pg_stat_activity or pg_locks that names no
    database finds the other students' sessions (notebook 04 once read another student's
    listener, whose state a student may not see: None instead of idle). Every such query in
    the package and the notebooks names the current database, its own pid or the class's roles."""
    found: dict[str, str] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for n, query in enumerate(_server_wide_queries(path.read_text(encoding="utf-8"))):
            found[f"{path.relative_to(ROOT)} #{n}"] = query
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        for number, source in _code_cells(notebook):
            for n, query in enumerate(_server_wide_queries(source)):
                found[f"{notebook.name} cell {number} #{n}"] = query
    unlimited = {where: " ".join(q.split()) for where, q in found.items() if not LIMITED.search(q)}
    assert unlimited == {}
    # what the check has to look at: the course's and the tools' queries are all found
    places = {where.split(" ")[0] for where in found}
    assert {
        "03-claiming-with-threads.ipynb",
        "04-pubsub-wakeups.ipynb",
        "07-timeouts-and-crashes.ipynb",
        "15-the-long-transaction.ipynb",
        "17-notify-at-scale.ipynb",
        "pgqueue_lab/features/health.py",
        "pgqueue_lab/tools/watch.py",
        "pgqueue_lab/tools/classroom.py",
    } <= places


def test_the_limit_check_finds_an_unlimited_query() -> None:
    """The check above can fail: the query notebook 04 had before it named the database."""
    before = "STATE = \"SELECT state FROM pg_stat_activity WHERE application_name = 'nb04-far-listener'\""
    after = 'STATE = "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND x"'
    assert [bool(LIMITED.search(q)) for q in _server_wide_queries(before)] == [False]
    assert [bool(LIMITED.search(q)) for q in _server_wide_queries(after)] == [True]
    assert _server_wide_queries("JOIN = 'a.pid = l.pid FROM pg_locks'") != []
    assert not LIMITED.search("SELECT 1 FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid")


#: Every notebook of the course, in order: what each student runs with "Run All".
EVERY_NOTEBOOK = sorted(NOTEBOOKS.glob("*.ipynb"))
#: What nbval says when a notebook's kernel did not start (not a cell that differs).
KERNEL_DID_NOT_START = "Kernel died before replying to kernel_info"
#: pytest's summary line: "351 passed, 7 xfailed, 6 xpassed in 247.60s".
OUTCOME = re.compile(r"(\d+) (passed|failed|xfailed|xpassed|skipped|errors?)\b")


def _outcomes(output: str) -> dict[str, int]:
    summary = [line for line in output.splitlines() if line.startswith("=") and " in " in line]
    assert summary, output[-3000:]
    return {kind: int(count) for count, kind in OUTCOME.findall(summary[-1])}


def _command_lines() -> list[str]:
    """The command line of every process on the machine (what ``ps -eo args`` shows)."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue  # the process ended
    return lines


@pytest.fixture(scope="module")
def three_students(teacher: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Class]:
    with _a_class(teacher, tmp_path_factory.mktemp("class-of-three"), 3) as made:
        yield made


def _what_failed(output: str) -> str:
    """The part of a `pgqueue-lab check` run's output that says what failed: the cells that
    differ (with their diffs) and the FAILED lines, or its last 4000 characters."""
    start = output.find("notebook cells that differ or failed")
    failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    if start < 0 and not failed:
        return output[-4000:]
    return (output[start : start + 6000] if start >= 0 else "") + "\n".join(failed)


@pytest.mark.skipif(
    EMBEDDED,
    reason="a class meets on a server many roles share (PGQUEUE_LAB_DSN): .ci/run runs it on its server path",
)
def test_three_students_run_every_notebook_at_the_same_time(
    teacher: str, three_students: Class, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every notebook, for three students of one class at once, each as their own role (no
    superuser, no pg_read_all_stats), under strict nbval: each passes every cell, with the
    stored outputs; all three were connected at the same moment; no password is on any
    command line meanwhile."""
    dsns = three_students.dsns()
    passwords = {name: str(conninfo_to_dict(dsn)["password"]) for name, dsn in dsns.items()}
    for name, dsn in dsns.items():
        with psycopg.connect(dsn, autocommit=True) as conn:
            rights = conn.execute(
                "SELECT rolsuper, rolcreaterole, rolcreatedb, pg_has_role('pg_read_all_stats', 'USAGE') "
                "FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
        assert rights == (False, False, False, False), (name, rights)
    notebooks = [str(path) for path in EVERY_NOTEBOOK]
    assert len(notebooks) >= 20
    began = time.monotonic()

    def check(name: str) -> subprocess.Popen[str]:
        folder = tmp_path / name
        folder.mkdir(exist_ok=True)
        return subprocess.Popen(
            [sys.executable, "-m", "pgqueue_lab", "check", *notebooks],
            cwd=folder,
            env={**os.environ, db.DSN_ENV: dsns[name], "PY_COLORS": "0"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    procs = {name: check(name) for name in dsns}
    outputs: dict[str, str] = {}
    readers = [
        threading.Thread(target=lambda n=n, p=p: outputs.__setitem__(n, p.communicate()[0]))
        for n, p in procs.items()
    ]
    for reader in readers:
        reader.start()
    exposed: set[str] = set()
    most_at_once = 0
    try:
        with db.connect(teacher) as watcher:
            while any(p.poll() is None for p in procs.values()):
                if time.monotonic() - began > 900:
                    raise AssertionError("the class did not finish within 15 minutes")
                exposed |= {name for line in _command_lines() for name, pw in passwords.items() if pw in line}
                row = watcher.execute(
                    "SELECT count(DISTINCT usename) FROM pg_stat_activity WHERE usename = ANY(%s)",
                    [list(dsns)],
                ).fetchone()
                most_at_once = max(most_at_once, int(row[0]) if row else 0)
                time.sleep(0.5)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        for reader in readers:
            reader.join(timeout=60)
    elapsed = time.monotonic() - began
    codes = {name: p.returncode for name, p in procs.items()}
    # A kernel that could not start (jupyter_client picks its ports by binding and releasing
    # them, and three runs starting sixty kernels can pick the same one) is not a difference in
    # a notebook: that student's run is repeated once, alone, and said so in the log.
    retried = sorted(name for name in dsns if codes[name] != 0 and KERNEL_DID_NOT_START in outputs[name])
    for name in retried:
        again = check(name)
        outputs[name] = again.communicate(timeout=900)[0]
        codes[name] = again.returncode
    failures = {name: _what_failed(out) for name, out in outputs.items() if codes[name] != 0}
    assert failures == {}, "\n\n".join(f"{name}:\n{report}" for name, report in failures.items())
    outcomes = {name: _outcomes(out) for name, out in outputs.items()}
    code_cells = sum(1 for path in EVERY_NOTEBOOK for _ in _code_cells(path))
    for name, counts in outcomes.items():
        assert counts.get("failed", 0) == counts.get("error", 0) == counts.get("errors", 0) == 0, name
        assert sum(counts.values()) == code_cells, (name, counts, code_cells)
    assert len({tuple(sorted(c.items())) for c in outcomes.values()}) == 1, outcomes
    assert most_at_once == 3
    assert exposed == set()
    with capsys.disabled():  # the figure for the log of the run (.ci/run)
        print(
            f"\nthree students, {len(notebooks)} notebooks ({code_cells} code cells) each, at once: "
            f"{elapsed:.0f} s; each: {outcomes[min(outcomes)]}"
            + (f"; run again alone, a kernel having failed to start: {', '.join(retried)}" if retried else "")
        )


def test_a_second_create_changes_nothing(teacher: str, two_students: Class) -> None:
    def state() -> list[Any]:
        with db.connect(teacher) as conn:
            return conn.execute(
                "SELECT r.oid, r.rolname, d.oid, r.rolconnlimit, s.setconfig FROM pg_roles r "
                "JOIN pg_database d ON d.datname = r.rolname "
                "LEFT JOIN pg_db_role_setting s ON s.setrole = r.oid AND s.setdatabase = 0 "
                "WHERE r.rolname LIKE %s ORDER BY 2",
                [_like(two_students.prefix)],
            ).fetchall()

    def verifiers() -> list[Any]:
        with db.connect(teacher) as conn:
            if not conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]:
                return []
            return conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname LIKE %s ORDER BY rolname",
                [_like(two_students.prefix)],
            ).fetchall()

    before, hashes, roster = state(), verifiers(), two_students.roster.read_text()
    again = _cli(
        "classroom", "create", "--students", "2", "--prefix", two_students.prefix,
        dsn=teacher, cwd=two_students.roster.parent,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "0 created, 2 kept, 0 given a new password" in again.stdout
    assert (state(), verifiers(), two_students.roster.read_text()) == (before, hashes, roster)


def test_list_shows_sessions_notebooks_jobs_and_the_oldest_snapshot(
    teacher: str, two_students: Class
) -> None:
    first, second = two_students.names()
    with (
        db.connect(two_students.dsns()[first]) as conn,
        psycopg.connect(two_students.dsns()[second]) as holder,
    ):
        Queue("nb03_claiming").create(conn)
        queue = Queue("nb05_final_status")  # created after 03, and its jobs are the latest
        queue.create(conn)
        queue.enqueue_many(conn, [("email", {}), ("email", {}), ("report", {})])
        queue.claim(conn, "me")
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT 1")  # the second student's snapshot, held open
        time.sleep(1.1)
        states = {
            s.name: s for s in classroom.list_students(teacher, two_students.prefix, two_students.roster)
        }
        listed = _cli(
            "classroom", "list", "--prefix", two_students.prefix, dsn=teacher, cwd=two_students.roster.parent
        )
        watched = _cli(
            "classroom", "watch", "--once", "--prefix", two_students.prefix,
            dsn=teacher, cwd=two_students.roster.parent,
        )  # fmt: skip
    one, two = states[first], states[second]
    assert (one.sessions, one.current, one.notebooks, one.jobs) == (
        1,
        "05",
        ["03", "05"],
        {"pending": 2, "running": 1},
    )
    assert one.snapshot_xids is None  # autocommit, idle: no snapshot
    assert (two.sessions, two.current, two.notebooks, two.jobs) == (1, None, [], {})
    assert two.snapshot_xids is not None and two.snapshot_seconds is not None and two.snapshot_seconds >= 1
    assert classroom.oldest_snapshot([one, two]) is two
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:3]}
    assert lines[first].split() == [first, "1", "05", "03", "05", "2", "1", "0", "0", "0", "-"]
    assert lines[second].split()[:9] == [second, "1", "-", "-", "0", "0", "0", "0", "0"]
    assert "age " in lines[second] and "<- oldest" not in lines[second]  # open 1 s: not news yet
    _, rows = classroom.table([one, two], warn_after=1.0)
    assert [row[-1].endswith("<- oldest") for row in rows] == [False, True]
    assert f"2 students, 2 connected now; {second} holds the class's oldest snapshot (" in listed.stdout
    assert watched.returncode == 0, watched.stderr
    assert f"pgqueue-lab classroom · prefix {two_students.prefix}" in watched.stdout
    assert "Ctrl-C" not in watched.stdout  # --once: one frame, nothing to stop
    assert f"2 students, 2 connected now; {second} holds the class's oldest snapshot (" in watched.stdout
    for name in (first, second):
        assert name in watched.stdout


def test_list_without_snapshots_says_so(teacher: str, two_students: Class) -> None:
    states = classroom.list_students(teacher, two_students.prefix, two_students.roster)
    assert classroom.oldest_snapshot(states) is None
    assert classroom.summary(states).endswith("no student holds a snapshot.")


def test_reset_passwords_gives_new_ones(teacher: str, two_students: Class) -> None:
    old = two_students.dsns()
    result = _cli(
        "classroom", "create", "--students", "2", "--prefix", two_students.prefix, "--reset-passwords",
        dsn=teacher, cwd=two_students.roster.parent,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    new = two_students.dsns()
    assert sorted(new) == sorted(old)
    assert all(conninfo_to_dict(new[n])["password"] != conninfo_to_dict(old[n])["password"] for n in new)
    assert "2 given a new password" in result.stdout
    for dsn in new.values():
        psycopg.connect(dsn, connect_timeout=10).close()


def test_drop_ends_sessions_and_leaves_nothing_behind(teacher: str, two_students: Class) -> None:
    first = two_students.names()[0]
    # something create did not make, with a name like a student's: drop must leave it alone
    stranger = f"{two_students.prefix}77"
    with db.connect(teacher) as conn:
        conn.execute(pgsql.SQL("CREATE ROLE {}").format(pgsql.Identifier(stranger)))
    student = psycopg.connect(two_students.dsns()[first], autocommit=True)
    try:
        result = _cli(
            "classroom", "drop", "--prefix", two_students.prefix, dsn=teacher, cwd=two_students.roster.parent
        )
        _one_line_error(result, "add --yes")
        result = _cli(
            "classroom",
            "drop",
            "--yes",
            "--prefix",
            two_students.prefix,
            dsn=teacher,
            cwd=two_students.roster.parent,
        )
        assert result.returncode == 0, result.stderr
        assert "dropped 2 students" in result.stdout
        assert _leftovers(teacher, two_students.prefix) == [f"role {stranger}"]
        with pytest.raises(psycopg.OperationalError):
            student.execute("SELECT 1")  # its session was ended
    finally:
        student.close()
    again = _cli(
        "classroom",
        "drop",
        "--yes",
        "--prefix",
        two_students.prefix,
        dsn=teacher,
        cwd=two_students.roster.parent,
    )
    assert again.returncode == 0 and "nothing dropped" in again.stdout


# -- refusals: one clear line, exit status 2, nothing made ---------------------------------------------


def test_a_role_without_rights_gets_a_clear_error(teacher: str, prefix: str, tmp_path: Path) -> None:
    made = _cli("classroom", "create", "--students", "1", "--prefix", prefix, dsn=teacher, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    with (tmp_path / f"{prefix}-roster.csv").open(newline="") as f:
        student_dsn = next(csv.DictReader(f))["dsn"]
    for action in (("create", "--students", "2"), ("list",), ("watch", "--once"), ("drop", "--yes")):
        result = _cli("classroom", *action, "--prefix", f"{prefix}x", dsn=student_dsn, cwd=tmp_path)
        _one_line_error(result, "may not create roles and databases", "CREATEROLE")
    assert _leftovers(teacher, f"{prefix}x") == []


def test_too_many_students_for_the_server_says_what_to_raise(
    teacher: str, prefix: str, tmp_path: Path
) -> None:
    result = _cli("classroom", "create", "--students", "999", "--prefix", prefix, dsn=teacher, cwd=tmp_path)
    _one_line_error(result, "max_connections", "Raise it", "999 students x 16 connections")
    assert _leftovers(teacher, prefix) == []
    assert not (tmp_path / f"{prefix}-roster.csv").exists()


def test_names_taken_by_others_are_refused(teacher: str, prefix: str, tmp_path: Path) -> None:
    with db.connect(teacher) as conn:
        conn.execute(pgsql.SQL("CREATE ROLE {}").format(pgsql.Identifier(f"{prefix}02")))
    result = _cli("classroom", "create", "--students", "3", "--prefix", prefix, dsn=teacher, cwd=tmp_path)
    _one_line_error(result, f"role {prefix}02", "did not make", "--prefix")
    assert _leftovers(teacher, prefix) == [f"role {prefix}02"]


def test_kept_students_need_their_roster(teacher: str, prefix: str, tmp_path: Path) -> None:
    made = _cli("classroom", "create", "--students", "1", "--prefix", prefix, dsn=teacher, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = _cli(
        "classroom", "create", "--students", "2", "--prefix", prefix, "--roster", "elsewhere.csv",
        dsn=teacher, cwd=tmp_path,
    )  # fmt: skip
    _one_line_error(result, f"{prefix}01", "not in the roster elsewhere.csv", "--reset-passwords")
    assert _leftovers(teacher, prefix) == [f"database {prefix}01", f"role {prefix}01"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "--students", "0"), "--students must be a whole number from 1 to 999, got 0"),
        (("create", "--students", "10000"), "--students must be a whole number from 1 to 999, got 10000"),
        (("create", "--students", "many"), "argument --students: invalid int value: 'many'"),
        (("create", "--students", "2", "--prefix", "Class-A"), "invalid --prefix 'Class-A'"),
        (("create", "--students", "2", "--prefix", "1abc"), "invalid --prefix '1abc'"),
        (("create", "--students", "2", "--prefix", "a" * 41), "at most 40 characters"),
        (("list", "--prefix", "x; DROP ROLE postgres"), "invalid --prefix 'x; DROP ROLE postgres'"),
        (("create", "--students", "2", "--connection-limit", "0"), "--connection-limit must be"),
        (("create",), "the following arguments are required: --students"),
        (("watch", "--interval", "0"), "--interval must be at least 0.5 seconds, got 0"),
        (("watch", "--interval", "nan"), "--interval must be at least 0.5 seconds, got nan"),
        (("expel",), "invalid choice: 'expel'"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    teacher: str, prefix: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    if "--prefix" not in args and args[0] in ("create", "list", "watch"):
        args = (*args, "--prefix", prefix)
    _one_line_error(_cli("classroom", *args, dsn=teacher, cwd=tmp_path), message)
    assert list(tmp_path.iterdir()) == []
    assert _leftovers(teacher, prefix) == []


@pytest.mark.parametrize("reset", [False, True])
def test_a_roster_that_is_not_a_roster_is_refused_and_kept(
    teacher: str, prefix: str, tmp_path: Path, reset: bool
) -> None:
    """A teacher who names the wrong file (their grades) gets one line, and the file is kept:
    with --reset-passwords too, which does not need to read it but would replace it."""
    grades = tmp_path / "grades.csv"
    grades.write_text("name,email\nalice,alice@example.com\n")
    args = ["classroom", "create", "--students", "1", "--prefix", prefix, "--roster", "grades.csv"]
    result = _cli(*args, *(["--reset-passwords"] if reset else []), dsn=teacher, cwd=tmp_path)
    _one_line_error(result, "grades.csv is not a roster", "give another --roster")
    assert grades.read_text() == "name,email\nalice,alice@example.com\n"
    assert _leftovers(teacher, prefix) == []
