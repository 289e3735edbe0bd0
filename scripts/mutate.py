"""Mutation testing, small and named: can the tests catch a broken queue?

    python scripts/mutate.py            # every mutation
    python scripts/mutate.py fencing    # only those whose name contains "fencing"
    python scripts/mutate.py --list     # list them

Each mutation breaks one guarantee of the queue (a SQL constant or a line of the worker). It is
applied alone, to a copy of the project in a temporary directory (the checkout is never
touched), and the tests that should notice run against it. A mutation is *killed* when those
tests fail. The script prints one line per mutation and the kill ratio, and exits 1 if any
mutation survived: a test that cannot fail proves nothing.

The database is the one the tests use (``PGQUEUE_LAB_DSN``, or the embedded server).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WC = "tests/test_worker_correctness.py"
QUEUE_TESTS = "tests/test_queue.py"


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` by ``new`` (each exactly once) in ``file``, inside the SQL constant
    ``constant`` if one is named; ``tests`` are the pytest node ids that must then fail."""

    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    constant: str | None = None
    also: tuple[tuple[str, str], ...] = ()  # more (old, new) pairs in the same file


def _home(constant: str) -> str:
    """The module that defines the SQL constant: the core's sql.py, or the feature's own module."""
    for path in sorted((ROOT / "pgqueue_lab").rglob("*.py")):
        if re.search(rf"^{constant} = ", path.read_text(encoding="utf-8"), re.M):
            return path.relative_to(ROOT).as_posix()
    raise SystemExit(f"no module of pgqueue_lab defines the SQL constant {constant}")


def _sql(name: str, constant: str, old: str, new: str, *tests: str) -> Mutation:
    return Mutation(name, _home(constant), old, new, tests, constant)


def _worker(name: str, old: str, new: str, *tests: str) -> Mutation:
    return Mutation(name, "pgqueue_lab/core/worker.py", old, new, tests)


def _holdings(name: str, old: str, new: str, *tests: str) -> Mutation:
    return Mutation(name, "pgqueue_lab/core/holdings.py", old, new, tests)


_PRUNE_PICK = """\
    SELECT id FROM {schema}.jobs
    WHERE status = ANY(%(statuses)s::text[])
      AND finished_at < now() - make_interval(secs => %(older_than)s)
    ORDER BY finished_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
"""

MUTATIONS = [
    # -- claiming -----------------------------------------------------------------------------
    _sql("claim without the row lock", "CLAIM", "    FOR UPDATE SKIP LOCKED\n", "",
         "tests/test_exactly_once.py"),
    _sql("claim waits instead of SKIP LOCKED", "CLAIM", "FOR UPDATE SKIP LOCKED", "FOR UPDATE",
         f"{QUEUE_TESTS}::test_claim_skips_a_locked_row_instead_of_waiting"),
    _sql("claim ignores run_at", "CLAIM", "      AND run_at <= now()\n", "",
         f"{QUEUE_TESTS}::test_retry_waits_for_its_backoff"),
    _sql("enqueue_many drops the priority", "ENQUEUE_MANY", "(job->>'priority')::int", "0",
         "tests/test_resilience.py::test_priority_order_through_a_worker"),
    _sql("enqueue sends no NOTIFY", "ENQUEUE", "pg_notify(%(channel)s, queue)", "NULL::void",
         "tests/test_notify.py::test_notification_is_sent_on_commit"),
    # -- fencing: every write checks the claim token -------------------------------------------
    _sql("fencing: COMPLETE ignores the token", "COMPLETE", " AND claim_token = %(token)s", "",
         f"{QUEUE_TESTS}::test_every_write_is_fenced_by_the_claim_token"),
    _sql("fencing: FAIL ignores the token", "FAIL", " AND claim_token = %(token)s",
         " AND %(token)s IS NOT NULL", f"{QUEUE_TESTS}::test_every_write_is_fenced_by_the_claim_token"),
    _sql("fencing: HEARTBEAT ignores the token", "HEARTBEAT", " AND claim_token = %(token)s", "",
         f"{QUEUE_TESTS}::test_every_write_is_fenced_by_the_claim_token"),
    _sql("fencing: RELEASE ignores the token", "RELEASE", " AND claim_token = %(token)s", "",
         f"{QUEUE_TESTS}::test_every_write_is_fenced_by_the_claim_token"),
    Mutation("fencing: every claim uses one token", "pgqueue_lab/core/queue.py", "token = uuid4()",
             "token = UUID(int=1)", (f"{QUEUE_TESTS}::test_every_write_is_fenced_by_the_claim_token",)),
    # -- leases, rescue, release -----------------------------------------------------------------
    _sql("rescue ignores the lease", "RESCUE", "WHERE status = 'running' AND locked_until < now()",
         "WHERE status = 'running'",
         f"{WC}::test_the_heartbeat_keeps_a_job_longer_than_its_lease"),
    _sql("release charges the attempt", "RELEASE", "attempts = attempts - 1", "attempts = attempts",
         f"{QUEUE_TESTS}::test_release_returns_jobs_without_counting_an_attempt"),
    _holdings("heartbeat disabled", "held = self.heartbeat(conn, jobs)", "held = {job.id for job in jobs}",
            f"{WC}::test_the_heartbeat_keeps_a_job_longer_than_its_lease"),
    _worker("no check before starting a job", "unsure = time.monotonic() + margin > batch.lease_until",
            "unsure = False", f"{WC}::test_a_thread_unsure_of_its_lease_asks_before_starting_a_job"),
    # -- backoff -----------------------------------------------------------------------------------
    _sql("backoff without jitter", "FAIL", " * (0.9 + 0.2 * random())", "",
         f"{WC}::test_jittered_delays_never_exceed_max_delay_and_do_vary"),
    _sql("backoff jitter past max_delay", "FAIL", "%(max_delay)s * (0.9 + 0.1 * random())",
         "%(max_delay)s * (0.9 + 0.2 * random())",
         f"{WC}::test_jittered_delays_never_exceed_max_delay_and_do_vary"),
    _sql("backoff exponent unbounded", "FAIL", "least(attempts - 1, 100)", "attempts - 1",
         f"{WC}::test_backoff_cannot_overflow_at_attempt_1025"),
    # -- wake-ups ----------------------------------------------------------------------------------
    _sql("a retry is not announced", "FAIL", "SELECT pg_notify(%(channel)s, queue) FROM failed",
         "SELECT NULL::void FROM failed",
         "tests/test_notify.py::test_retries_releases_and_rescues_are_announced"),
    _sql("a release is not announced", "RELEASE", "SELECT pg_notify(%(channel)s, queue)", "SELECT NULL::void",
         f"{WC}::test_jobs_released_by_a_stopping_worker_wake_another"),
    _sql("a rescue is not announced", "RESCUE", "SELECT pg_notify(%(channel)s, queue)", "SELECT NULL::void",
         "tests/test_notify.py::test_retries_releases_and_rescues_are_announced"),
    _worker("idle sleep spins on a locked job", "locked = due == 0.0", "locked = False",
            f"{WC}::test_idle_sleep_ignores_a_locked_due_job"),
    # -- the worker's own failures -------------------------------------------------------------------
    _holdings("a timeout releases finished jobs", "orphans.done += batch.done",
              "orphans.waiting += batch.done",
            f"{WC}::test_a_timeout_mid_batch_reruns_nothing_that_finished"),
    _worker("a reconnect forgets the batch", "                        self.stats.reconnects += 1\n",
            "                        self.stats.reconnects += 1\n"
            "                        self._batches[worker_id] = _Batch()\n",
            f"{WC}::test_a_connection_dropped_after_the_handlers_ran_reruns_nothing"),
    _worker("Ctrl-C leaves the threads running", "            self.stop()\n            raise\n",
            "            raise\n", f"{WC}::test_ctrl_c_stops_run_gracefully"),
    _worker("handlers may kill their thread", "except BaseException as exc:  # noqa: BLE001 - any handler",
            "except Exception as exc:  # noqa: BLE001 - any handler",
            f"{WC}::test_sys_exit_and_unstorable_error_text_fail_only_their_job"),
    _holdings("a dead thread strands its jobs", 'self.adopt(batch, f"WorkerError: {message}")', "pass",
            f"{WC}::test_a_thread_that_dies_hands_its_jobs_over_and_run_says_so"),
    _holdings("stats count refused failures", "            is not None\n            for job in jobs",
            "            is not None or True\n            for job in jobs",
            f"{WC}::test_stats_count_what_the_database_recorded"),
    _holdings("a write in flight is not heartbeated",
            "            batch.writing, batch.write_started = ids, time.monotonic()\n",
            "            batch.writing, batch.write_started = ids, time.monotonic()\n"
            "            batch.drop(ids)\n",
            f"{WC}::test_a_write_stalled_on_its_connection_loses_and_repeats_nothing[completion]"),
    _holdings("a hung write is never taken over",
            "elif batch.write_started is not None and now - batch.write_started > self.lease:",
            "elif False:", f"{WC}::test_a_write_stalled_on_its_connection_loses_and_repeats_nothing"),
    _holdings("a refused write stops the thread",
              "write(jobs), 0\n            except psycopg.Error as exc:\n",
              "write(jobs), 0\n            except ZeroDivisionError as exc:\n",
            f"{WC}::test_a_write_the_database_refuses_blocks_nothing_else"),
    _holdings("an unprintable exception stops the thread",
            "except BaseException as inner:  # noqa: BLE001 - a handler's exception may be anything",
            "except ZeroDivisionError as inner:  # noqa: BLE001 - a handler's exception may be anything",
            f"{WC}::test_sys_exit_and_unstorable_error_text_fail_only_their_job"),
    _worker("start() while the last run is stopping",
            "if any(t.is_alive() for t in self._workers + self._helpers):", "if False:",
            f"{WC}::test_start_refuses_while_the_previous_run_is_still_stopping"),
    Mutation("the heartbeat waits behind the housekeeper's writes", "pgqueue_lab/core/worker.py",
             'self._helper_loop("heartbeat", (self._beat,), final=())',
             'self._helper_loop("heartbeat", (), final=())',
             (f"{WC}::test_a_slow_write_does_not_starve_the_heartbeat",),
             also=(("(self._take_over, self._record_orphans, self._rescue, *steps)",
                    "(self._beat, self._take_over, self._record_orphans, self._rescue, *steps)"),)),
    _holdings("a refused heartbeat stops every renewal",
              '            _log.warning("the database refused a heartbeat',
              '            raise\n            _log.warning("the database refused a heartbeat',
              f"{WC}::test_a_refused_heartbeat_blocks_no_other_job"),
    _holdings("a row locked by another transaction reads as rescued",
              "return renewed | (set(self.queue.held(conn, skipped)) if skipped else set())",
              "return renewed", f"{WC}::test_a_row_lock_held_by_another_transaction_loses_no_job"),
    _worker("a refused rescue blocks every rescue", '            _log.warning("the database refused a rescue',
            '            raise\n            _log.warning("the database refused a rescue',
            f"{WC}::test_a_refused_rescue_blocks_no_other_rescue"),
    _holdings("a statement timeout is retried forever",
              "    if isinstance(exc, psycopg.errors.QueryCanceled):\n        return True",
              "    if isinstance(exc, psycopg.errors.QueryCanceled):\n        return False",
              f"{WC}::test_a_batch_write_longer_than_statement_timeout_is_written_job_by_job"),
    Mutation("writes for several claims apply in part", "pgqueue_lab/core/queue.py",
             "with _atomic(conn) if statements <= 1 else conn.transaction():", "with _atomic(conn):",
             (f"{QUEUE_TESTS}::test_completing_jobs_of_several_claims_is_all_or_nothing",)),
    Mutation("error text not made storable", "pgqueue_lab/core/validate.py",
             'text = str(error).replace("\\x00", "\\\\x00")', "text = str(error)",
             (f"{WC}::test_sys_exit_and_unstorable_error_text_fail_only_their_job",)),
    Mutation("reads leave a transaction open", "pgqueue_lab/core/queue.py",
             "    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:\n"
             "        return nullcontext()\n",
             "    if conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:\n"
             "        return nullcontext()\n",
             (f"{WC}::test_non_autocommit_connections_never_leave_a_transaction_open",)),
    # -- retention: only finished jobs leave, each into exactly one table ----------------------
    _sql("archive takes pending jobs too", "ARCHIVE",
         "WHERE j.id = doomed.id AND j.status = ANY(%(statuses)s::text[])",
         "WHERE j.id = doomed.id OR j.status = 'pending'",
         "tests/test_retention.py::test_archive_moves_only_finished_jobs_each_into_exactly_one_table"),
    _sql("prune's batch chosen in a subquery the planner may run again", "PRUNE",
         "WITH doomed AS MATERIALIZED (\n" + _PRUNE_PICK + ")\nDELETE FROM {schema}.jobs AS j\nUSING doomed\n"
         "WHERE j.id = doomed.id AND",
         "DELETE FROM {schema}.jobs AS j\nWHERE j.id IN (\n" + _PRUNE_PICK + ") AND",
         "tests/test_retention.py::test_prune_deletes_only_finished_jobs"),
    # -- unique jobs, cancellation, pausing, per-key limits, schedules (issue 12) ----------------
    _sql("unique: the key outlives its job", "CREATE_UNIQUE_INDEX",
         " AND status IN ('pending', 'running')", "",
         "tests/test_unique.py::test_a_running_job_holds_its_key_and_a_finished_one_frees_it"),
    _sql("unique: a key taken meanwhile is not looked up", "ENQUEUE_UNIQUE",
         "WHERE unique_key = %(unique_key)s", "WHERE false AND unique_key = %(unique_key)s",
         "tests/test_unique.py::test_eight_producers_racing_with_the_same_keys_make_one_job_per_key"),
    Mutation("unique: a deadlocked enqueue is not run again", "pgqueue_lab/features/unique.py",
             "DEADLOCK_RETRIES = 20", "DEADLOCK_RETRIES = 0",
             ("tests/test_unique.py::test_batches_and_single_enqueues_racing_with_claims_survive_their_deadlocks",)),
    Mutation("unique: a batch's later copy of a key looks it up again", "pgqueue_lab/features/unique.py",
             '                    if row["unique_key"] in resolved:', "                    if False:",
             ("tests/test_unique.py::test_copies_of_a_key_share_one_id_when_the_batch_falls_back_job_by_job",)),
    Mutation("schedule: one broken schedule stops the tick", "pgqueue_lab/features/schedule.py",
             "            if conn.closed or conn.broken:", "            if True:",
             ("tests/test_schedule.py::test_a_broken_schedule_is_reported_and_the_others_still_fire",
              "tests/test_schedule.py::test_a_workers_scheduler_counts_broken_schedules_and_keeps_ticking")),
    Mutation("validate: keys and schedule names of any length", "pgqueue_lab/core/validate.py",
             "    if len(value) > MAX_KEY_LENGTH:", "    if False:",
             ("tests/test_bad_input.py",)),
    Mutation("schedule: a seconds field is accepted", "pgqueue_lab/features/schedule.py",
             "    if fields != 5:", "    if fields not in (5, 6):",
             ("tests/test_schedule.py::test_a_six_field_cron_row_written_by_sql_is_reported_not_fired_once_a_minute",
              "tests/test_schedule.py::test_a_bad_schedule_is_refused_before_anything_is_sent")),
    Mutation("schedule: missed ticks are not caught up", "pgqueue_lab/features/schedule.py",
             "CATCH_UP = 3", "CATCH_UP = 1",
             ("tests/test_schedule.py::test_missed_ticks_are_caught_up_three_at_most",)),
    _sql("unique: requeue ignores held keys", "REQUEUE_SKIP_HELD", "WHERE j.id = a.id AND NOT a.held AND",
         "WHERE j.id = a.id AND",
         "tests/test_unique.py::test_requeue_skips_failed_jobs_whose_key_is_held_and_requeues_the_rest"),
    Mutation("limits: per_key past 32 bits reaches the database", "pgqueue_lab/core/validate.py",
             '    return integer(positive_int(value, "per_key"), "per_key")',
             '    return positive_int(value, "per_key")', ("tests/test_bad_input.py",)),
    Mutation("cancel: the command takes any Unicode digit", "pgqueue_lab/tools/control.py",
             "        if not (text.isascii() and text.isdigit()):", "        if not text.isdigit():",
             ("tests/test_control_cli.py::test_bad_input_is_one_line_and_exit_status_2",)),
    _sql("cancel: a cancelled job's late complete counts", "COMPLETE", " AND status = 'running'", "",
         "tests/test_cancel.py::test_a_cancelled_running_job_late_writes_change_nothing"),
    _sql("cancel: a running job's worker is not told", "CANCEL", "SELECT pg_notify(%(channel)s, id::text)",
         "SELECT NULL::void",
         "tests/test_cancel.py::test_a_cancel_of_a_running_job_is_announced_on_the_cancel_channel"),
    _sql("cancel: a racing claim escapes the cancel", "CANCEL", "        FOR UPDATE\n", "",
         "tests/test_cancel.py::test_cancel_racing_with_claims_never_loses_a_job_between_states"),
    Mutation("cancel: no polling fallback", "pgqueue_lab/features/cancel.py",
             "        poll(self.worker.queue, conn, self.holdings)", "        pass",
             ("tests/test_cancel.py::test_a_running_handler_learns_of_its_cancel_and_the_job_stays_cancelled",)),
    Mutation("cancel: claimed jobs start after their cancel", "pgqueue_lab/features/cancel.py",
             "            batch.waiting = [job for job in batch.waiting if job.id not in job_ids]\n", "",
             ("tests/test_cancel.py::test_a_running_handler_learns_of_its_cancel_and_the_job_stays_cancelled",)),
    _sql("pause: the claim ignores paused queues", "CLAIM",
         "      AND queue NOT IN (SELECT queue FROM {schema}.paused_queues)\n", "",
         "tests/test_pause.py"),
    Mutation("limits: limited claims do not take turns", "pgqueue_lab/features/limits.py",
             "        conn.execute(KEYED_CLAIM_LOCK", "        0 and conn.execute(KEYED_CLAIM_LOCK",
             ("tests/test_limits.py::test_limited_claims_racing_with_new_urgent_jobs_never_pass_the_limit",)),
    _sql("limits: a batch ignores its own jobs of a key", "CLAIM_KEYED", "r.running + r.turn <= %(per_key)s",
         "r.running < %(per_key)s", "tests/test_limits.py"),
    _sql("limits: fair mode forgets who was served", "CLAIM_KEYED",
         "CASE WHEN %(fair)s THEN r.served_at END NULLS FIRST", "CASE WHEN %(fair)s THEN 0 END",
         "tests/test_limits.py::test_fair_mode_serves_a_small_tenant_among_a_big_one"),
    _sql("schedule: a tick fires again", "SCHEDULE_FIRE",
         " AND (last_tick IS NULL OR last_tick < %(tick)s)", "",
         "tests/test_schedule.py::test_a_tick_fires_once_even_after_its_job_finished"),
]  # fmt: skip


def apply(mutation: Mutation, root: Path) -> None:
    """Apply ``mutation`` to the copy of the project in ``root``."""
    path = root / mutation.file
    text = path.read_text()
    start, end = 0, len(text)
    if mutation.constant:
        start = text.index(f'\n{mutation.constant} = """')
        end = text.index('"""', text.index('"""', start) + 3)
    region = text[start:end]
    if region.count(mutation.old) != 1:
        raise SystemExit(f"mutation {mutation.name!r}: its text occurs {region.count(mutation.old)} times")
    text = text[:start] + region.replace(mutation.old, mutation.new) + text[end:]
    for old, new in mutation.also:
        if text.count(old) != 1:
            raise SystemExit(f"mutation {mutation.name!r}: {old!r} occurs {text.count(old)} times")
        text = text.replace(old, new)
    path.write_text(text)


def copy_project(dest: Path) -> None:
    for name in ("pgqueue_lab", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("conftest.py", "pyproject.toml"):
        shutil.copy2(ROOT / name, dest / name)


def run(mutation: Mutation | None, timeout: float) -> tuple[bool, float, str]:
    """Run the mutation's tests on a mutated copy; return (tests failed, seconds, last line)."""
    with tempfile.TemporaryDirectory(prefix="pgqueue-lab-mutant-") as tmp:
        root = Path(tmp)
        copy_project(root)
        if mutation is not None:
            apply(mutation, root)
            tests = list(mutation.tests)
        else:
            tests = sorted({test for m in MUTATIONS for test in m.tests})
        env = {**os.environ, "PYTHONPATH": str(root)}  # worker subprocesses import the mutant too
        start = time.monotonic()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return True, time.monotonic() - start, f"timed out after {timeout:g} s (counts as killed)"
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        last = lines[-1] if lines else result.stderr.strip()[-200:]
        if mutation is None and result.returncode != 0:  # say which test failed unmutated
            last += "; " + "; ".join(line for line in lines if line.startswith(("FAILED", "ERROR")))
        if result.returncode not in (0, 1):
            raise SystemExit(
                f"pytest could not run the tests of {mutation and mutation.name!r}:\n{result.stdout}"
            )
        # Killed means a test *failed*; an error while setting a test up proves nothing.
        killed = result.returncode == 1 and " failed" in last and "error" not in last
        return killed, time.monotonic() - start, last


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("only", nargs="?", help="run only mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and their tests")
    parser.add_argument("--jobs", type=int, default=2, help="mutations run at once (default 2)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per mutation")
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or args.only in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name}: {', '.join(m.tests)}")
        return 0
    if not chosen:
        print(f"no mutation matches {args.only!r}", file=sys.stderr)
        return 2

    # The unmutated copy must pass the same tests, or a "kill" would mean nothing.
    failed, seconds, last = run(None, args.timeout * 2)
    if failed:
        print(f"the tests fail without any mutation ({last}): fix them first", file=sys.stderr)
        return 1
    print(f"baseline: the tests pass unmutated ({seconds:.0f} s)", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(lambda m: run(m, args.timeout), chosen))
    survivors = []
    for mutation, (killed, seconds, last) in zip(chosen, results, strict=True):
        print(
            f"{'killed  ' if killed else 'SURVIVED'} {seconds:5.1f} s  {mutation.name}  ({last})", flush=True
        )
        if not killed:
            survivors.append(mutation.name)
    print(f"\nkill ratio: {len(chosen) - len(survivors)}/{len(chosen)}")
    if survivors:
        print("survivors (their tests cannot tell): " + "; ".join(survivors), file=sys.stderr)
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
