"""``pgqueue-lab classroom`` against the run's real server: two students, each in a world of their own.

Every class made here has a prefix unique to the run (``pgqlab_test_<random>_``), so two test runs
on one server never meet, and the fixtures remove its roles and databases with plain SQL in a
``finally`` even when the command under test is broken. The run's role must be allowed to create
roles and databases (CI's server and the embedded one are superusers); otherwise these tests skip.
"""

from __future__ import annotations

import csv
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict

from pgqueue_lab import Queue, classroom, db

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
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


@pytest.fixture(scope="module")
def two_students(teacher: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Class]:
    """A class of two, made by the command; removed afterwards whatever happens."""
    prefix = _prefix()
    folder = tmp_path_factory.mktemp("classroom")
    try:
        created = _cli("classroom", "create", "--students", "2", "--prefix", prefix, dsn=teacher, cwd=folder)
        assert created.returncode == 0, created.stderr
        yield Class(prefix, folder / f"{prefix}-roster.csv", created)
    finally:
        _remove_everything(teacher, prefix)


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


def test_two_students_run_the_same_notebooks_at_the_same_time(two_students: Class, tmp_path: Path) -> None:
    """Notebooks 00 and 03 (threads, lock waits watched in pg_stat_activity), each student with
    their DSN, at once, under strict nbval: both pass."""
    notebooks = [str(NOTEBOOKS / "00-start-here.ipynb"), str(NOTEBOOKS / "03-claiming-with-threads.ipynb")]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pgqueue_lab", "check", *notebooks],
            cwd=tmp_path,
            env={**os.environ, db.DSN_ENV: dsn, "PY_COLORS": "0"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for dsn in two_students.dsns().values()
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=300)
            outputs.append((proc.returncode, out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for code, out in outputs:
        assert code == 0, out[-3000:]


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


def test_list_shows_sessions_notebooks_and_jobs(teacher: str, two_students: Class) -> None:
    first, second = two_students.names()
    with db.connect(two_students.dsns()[first]) as conn:
        queue = Queue("nb05_final_status")
        queue.create(conn)
        queue.enqueue_many(conn, [("email", {}), ("email", {}), ("report", {})])
        queue.claim(conn, "me")
        states = {s.name: s for s in classroom.list_students(teacher, two_students.prefix)}
        listed = _cli(
            "classroom", "list", "--prefix", two_students.prefix, dsn=teacher, cwd=two_students.roster.parent
        )
    assert (states[first].sessions, states[first].notebooks, states[first].jobs) == (
        1,
        ["05"],
        {"pending": 2, "running": 1},
    )
    assert (states[second].sessions, states[second].notebooks, states[second].jobs) == (0, [], {})
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.split() for line in listed.stdout.splitlines()[1:3]}
    assert lines[first][1:] == ["1", "05", "2", "1", "0", "0", "0"]
    assert lines[second][1:] == ["0", "-", "0", "0", "0", "0", "0"]


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
    for action in (("create", "--students", "2"), ("list",), ("drop", "--yes")):
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
        (("create", "--students", "many"), "argument --students: invalid int value: 'many'"),
        (("create", "--students", "2", "--prefix", "Class-A"), "invalid --prefix 'Class-A'"),
        (("create", "--students", "2", "--connection-limit", "0"), "--connection-limit must be"),
        (("create",), "the following arguments are required: --students"),
        (("expel",), "invalid choice: 'expel'"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    teacher: str, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    _one_line_error(_cli("classroom", *args, dsn=teacher, cwd=tmp_path), message)
    assert list(tmp_path.iterdir()) == []
