"""Periodic jobs: each tick of a schedule is enqueued exactly once, however many schedulers run."""

from __future__ import annotations

import itertools
import random
import string
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from faults import wait_for

from pgqueue_lab import InvalidInputError, Job, Queue, Worker, db, schedule, sql
from pgqueue_lab.features.schedule import WAKE_LATE, add, latest_tick, remove, tick, until_next


def _jobs_by_key(conn: psycopg.Connection[Any], queue: Queue) -> Counter[str]:
    rows = conn.execute(
        psycopg.sql.SQL("SELECT unique_key FROM {}.jobs").format(psycopg.sql.Identifier(queue.schema))
    ).fetchall()
    return Counter(str(r[0]) for r in rows)


def test_latest_tick_of_a_cron_expression_and_of_an_interval() -> None:
    at = datetime(2026, 1, 1, 10, 5, 0, tzinfo=UTC)
    assert latest_tick("*/5 * * * *", None, at) == at  # on the tick itself
    assert latest_tick("*/5 * * * *", None, at.replace(minute=4, second=59)) == at.replace(minute=0)
    assert latest_tick("0 2 * * *", None, at) == datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    assert latest_tick(None, 2.5, at.replace(second=4)) == at.replace(second=2, microsecond=500_000)


def test_four_schedulers_enqueue_each_tick_exactly_once(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    add(queue, conn, "every-second", "beat", {"hello": 1}, every=1)
    stop = threading.Event()
    fired: list[str] = []
    lock = threading.Lock()

    def scheduler() -> None:
        with db.connect(dsn) as own:
            while not stop.is_set():
                mine = tick(queue, own)
                with lock:
                    fired.extend(f.tick.isoformat() for f in mine)
                time.sleep(0.003)

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    stop.wait(3.2)
    stop.set()
    for t in threads:
        t.join()
    keys = _jobs_by_key(conn, queue)
    assert 2 <= len(fired) <= 4 and len(fired) == len(set(fired))  # once per tick
    assert keys == Counter(f"schedule:every-second@{t}" for t in fired)
    assert {job["payload"]["hello"] for job in queue.jobs(conn)} == {1}


def test_a_tick_fires_once_even_after_its_job_finished(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Eight schedulers fire the same tick at once (the boundary case), then one fires it again
    after its job completed (so no unique key protects it any more): one job in all."""
    add(queue, conn, "s", "t", every=60)
    conn.execute(
        psycopg.sql.SQL("UPDATE {}.schedules SET created_at = '2000-01-01'").format(
            psycopg.sql.Identifier(queue.schema)
        )
    )
    the_tick = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    params = {"name": "s", "tick": the_tick, "unique_key": "schedule:s@x", "channel": queue.channel}
    barrier = threading.Barrier(8)
    got: list[Any] = []

    def scheduler() -> None:
        with db.connect(dsn) as own:
            barrier.wait()
            got.append(own.execute(sql.compose(schedule.SCHEDULE_FIRE, queue.schema), params).fetchone())

    threads = [threading.Thread(target=scheduler) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len([g for g in got if g is not None]) == 1
    queue.complete(conn, queue.claim(conn, "w"))
    assert conn.execute(sql.compose(schedule.SCHEDULE_FIRE, queue.schema), params).fetchone() is None
    assert len(queue.jobs(conn)) == 1


def test_workers_with_schedules_run_each_tick_once(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    add(queue, conn, "beat", "beat", every=1)
    ran: list[int] = []

    def handler(job: Job) -> None:
        ran.append(job.id)

    workers = [Worker(queue, {"beat": handler}, dsn=dsn, schedules=True, name=f"s{n}") for n in range(3)]
    for w in workers:
        w.start()
    time.sleep(2.5)
    assert remove(queue, conn, "beat") is True and remove(queue, conn, "beat") is False
    time.sleep(0.3)
    for w in workers:
        w.stop(timeout=30)
    keys = _jobs_by_key(conn, queue)
    assert 2 <= len(keys) <= 3 and set(keys.values()) == {1}
    assert sorted(ran) == sorted(job["id"] for job in queue.jobs(conn))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of cron"),
        ({"cron": "* * * * *", "every": 5}, "exactly one of cron"),
        ({"cron": "61 * * * *"}, "cron expression '61 \\* \\* \\* \\*' is not valid"),
        ({"cron": "every day"}, "has 2 fields"),
        ({"cron": 5}, "cron must be a string"),
        ({"cron": "*/10 * * * * *"}, "has 6 fields, not 5: minute hour day month weekday \\(no seconds\\)"),
        ({"cron": "0 0 * * * 2026"}, "has 6 fields"),
        ({"cron": "@daily"}, "has 1 field, not 5"),
        ({"every": 0.5}, "at least 1 second"),
        ({"every": -3}, "every"),
    ],
)
def test_a_bad_schedule_is_refused_before_anything_is_sent(
    conn: psycopg.Connection[Any], queue: Queue, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        add(queue, conn, "s", "t", **kwargs)
    assert tick(queue, conn) == []


def _add_broken_schedules(conn: psycopg.Connection[Any], queue: Queue) -> str:
    """A good schedule, and two that only SQL could write: a cron expression cronsim cannot parse,
    and a name so long that its tick's unique key does not fit the index. All due since 2000."""
    add(queue, conn, "good", "beat", every=1)
    rnd = random.Random(12)  # random letters: the index cannot compress them
    long_name = "b" + "".join(rnd.choice(string.ascii_letters) for _ in range(2679))  # fits the pkey
    insert = psycopg.sql.SQL("INSERT INTO {}.schedules (name, type, cron, every) VALUES (%s, 't', %s, %s)")
    schema = psycopg.sql.Identifier(queue.schema)
    conn.execute(insert.format(schema), ("a-typo", "*/5 * * *", None))
    conn.execute(insert.format(schema), (long_name, None, 1))
    conn.execute(psycopg.sql.SQL("UPDATE {}.schedules SET created_at = '2000-01-01'").format(schema))
    return long_name


def test_a_broken_schedule_is_reported_and_the_others_still_fire(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """Found by attacking the feature: the first schedule that failed stopped the whole tick."""
    long_name = _add_broken_schedules(conn, queue)
    assert {f.name for f in tick(queue, conn)} == {"good"}
    failed: list[tuple[str, str]] = []
    assert tick(queue, conn, lambda name, exc: failed.append((name, type(exc).__name__))) == []
    assert failed == [("a-typo", "InvalidInputError"), (long_name, "ProgramLimitExceeded")]  # again


def test_a_workers_scheduler_counts_broken_schedules_and_keeps_ticking(
    dsn: str, conn: psycopg.Connection[Any], queue: Queue
) -> None:
    _add_broken_schedules(conn, queue)
    ran: list[int] = []
    worker = Worker(queue, {"beat": lambda job: ran.append(job.id)}, dsn=dsn, schedules=True)
    worker.start()
    try:
        # the first tick catches up three ticks of the good schedule; then one tick a second
        wait_for(lambda: len(ran) >= 5, 10, "five ticks of the good schedule")
    finally:
        worker.stop(timeout=30)
    assert worker.stats.schedule_errors >= 4  # two broken schedules, at least two ticks
    assert [e.split(" failed")[0] for e in worker.stats.errors][:1] == ["schedule 'a-typo'"]
    assert len(worker.stats.errors) == 2  # listed once each, however many ticks failed


def test_a_six_field_cron_row_written_by_sql_is_reported_not_fired_once_a_minute(
    conn: psycopg.Connection[Any], queue: Queue
) -> None:
    """cronsim reads a leading seconds field; the scheduler works in whole minutes."""
    with pytest.raises(InvalidInputError, match="has 6 fields"):
        latest_tick("*/10 * * * * *", None, datetime(2026, 11, 28, 11, 0, 45, tzinfo=UTC))
    insert = psycopg.sql.SQL("INSERT INTO {}.schedules (name, type, cron) VALUES ('s', 't', %s)")
    conn.execute(insert.format(psycopg.sql.Identifier(queue.schema)), ("*/10 * * * * *",))
    conn.execute(
        psycopg.sql.SQL("UPDATE {}.schedules SET created_at = '2000-01-01'").format(
            psycopg.sql.Identifier(queue.schema)
        )
    )
    failed: list[str] = []
    assert tick(queue, conn, lambda name, exc: failed.append(name)) == []
    assert failed == ["s"] and queue.jobs(conn) == []


def test_missed_ticks_are_caught_up_three_at_most(conn: psycopg.Connection[Any], queue: Queue) -> None:
    """Found by attacking the feature: a scheduler that missed ticks (a slow tick call, a busy
    machine) enqueued only the latest. Now the latest CATCH_UP (3) since last_tick, in order."""
    back = psycopg.sql.SQL(
        "UPDATE {}.schedules SET created_at = '2000-01-01', last_tick ="
        " to_timestamp(floor(extract(epoch FROM now()) / 60) * 60) - %s * interval '1 minute'"
        " WHERE name = %s"
    ).format(psycopg.sql.Identifier(queue.schema))
    for name, behind in [("three", 3), ("ten", 10)]:
        add(queue, conn, name, "t", every=60)
        conn.execute(back, (behind, name))  # last_tick this many minutes behind: as many due
    fired: dict[str, list[float]] = {"three": [], "ten": []}
    for f in tick(queue, conn):
        fired[f.name].append(f.tick.timestamp())
    for ticks in fired.values():  # consecutive minutes, oldest first, the latest three
        assert len(ticks) == 3 and [b - a for a, b in itertools.pairwise(ticks)] == [60, 60]
    assert fired["three"] == fired["ten"]
    assert tick(queue, conn) == []  # each tick once
    assert set(_jobs_by_key(conn, queue).values()) == {1}


def test_the_scheduler_wakes_just_after_whole_intervals_not_an_interval_after_its_tick() -> None:
    assert until_next(1.0, 1000.3) == pytest.approx(0.7 + WAKE_LATE)
    assert until_next(1.0, 1000.98) == pytest.approx(0.02 + WAKE_LATE)  # a slow tick: no drift
    assert until_next(60.0, 1200.0) == pytest.approx(60 + WAKE_LATE)
