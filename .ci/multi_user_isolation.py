"""Used by .ci/multi-user: each Unix user's embedded server holds that user's data only.

``root``: create root's marker table, print the DSN, wait for a line on stdin (the second user
looks meanwhile), then say whether the second user's marker is absent, and drop root's.
``user ROOT_DSN``: create the user's marker, check root's is absent and that root's server
cannot even be reached. ``cleanup``: drop the user's marker.
"""

from __future__ import annotations

import sys

import psycopg

from pgqueue_lab import connect, get_dsn

ROOT_MARKER, USER_MARKER = "multi_user_marker_root", "multi_user_marker_user"


def exists(conn: psycopg.Connection[object], table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", [table]).fetchone()
    return bool(row and row[0])


def main(role: str, *args: str) -> None:
    with connect() as conn:
        if role == "root":
            conn.execute(f"CREATE TABLE IF NOT EXISTS {ROOT_MARKER} ()")
            print(get_dsn(), flush=True)
            input()
            seen = exists(conn, USER_MARKER)
            conn.execute(f"DROP TABLE {ROOT_MARKER}")
            print("root: sees the second user's table" if seen else "root: own data only")
        elif role == "user":
            conn.execute(f"CREATE TABLE IF NOT EXISTS {USER_MARKER} ()")
            assert exists(conn, USER_MARKER)
            if exists(conn, ROOT_MARKER):
                sys.exit("second user: sees root's table")
            try:
                psycopg.connect(args[0], connect_timeout=5).close()
            except psycopg.OperationalError as exc:
                reason = str(exc).strip().splitlines()[0].rsplit(": ", 1)[-1]
                print(f"second user: own data only; root's server unreachable ({reason})")
            else:
                sys.exit("second user: could connect to root's embedded server")
        else:
            conn.execute(f"DROP TABLE {USER_MARKER}")


if __name__ == "__main__":
    main(*sys.argv[1:])
