"""The seed's worker, in Python, for notebook 07: it claims a job the seed's way, then hangs.

    python 07_seed_worker.py SCHEMA

It claims one pending job exactly as the seed's Perl does: in one transaction, ``SELECT ...
FOR UPDATE SKIP LOCKED`` and ``UPDATE ... SET status = 'running'``, then commit. It then works
on the job outside any transaction, as the seed does, and that work never ends (a stuck network
call, say): only SIGKILL stops it. The seed records no lease (``locked_until`` stays NULL) and
sends no heartbeat, so nothing in the table says when the job should be given up.

It prints one line on stdout, ``claimed job N``, and nothing else. The database comes from
PGQUEUE_LAB_DSN, which the notebook sets.
"""

from __future__ import annotations

import sys
import threading

from pgqueue_lab import bench, connect, sql


def main() -> None:
    schema = sys.argv[1]
    conn = connect()
    with conn.transaction():  # the seed's $conn->transaction(async sub { ... })
        (job_id, *_) = conn.execute(sql.compose(bench.SEED_SELECT, schema)).fetchone()
        conn.execute(sql.compose(bench.SEED_MARK_RUNNING, schema), {"id": job_id})
    # committed: the job is 'running' for everyone, and no lock protects it any more
    print(f"claimed job {job_id}", flush=True)
    threading.Event().wait()  # the work; the seed would then run SEED_COMPLETE in a new transaction


if __name__ == "__main__":  # importing this file (pytest collecting it, say) runs nothing
    main()
