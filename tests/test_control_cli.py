"""``pgqueue-lab cancel``, ``pause`` and ``resume``: what they print, and bad input (exit 2)."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from pgqueue_lab import Queue, cancel, cli


def test_cancel_pause_and_resume_from_a_terminal(
    conn: psycopg.Connection[Any], queue: Queue, capsys: pytest.CaptureFixture[str]
) -> None:
    done, running, pending = queue.enqueue_many(conn, [("t", {})] * 3)
    first, _ = queue.claim(conn, "w", limit=2)  # takes `done` and `running`
    queue.complete(conn, first)
    schema = ["--schema", queue.schema]
    assert cli.main(["cancel", *schema, str(pending), str(running), str(done), "999999"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"job {done}: not cancelled (no such job, or it had already finished)",
        f"job {running}: cancelled (it was running; its worker is told to stop)",
        f"job {pending}: cancelled (it was pending; it will not run)",
        "job 999999: not cancelled (no such job, or it had already finished)",
    ]
    assert cli.main(["pause", *schema, "emails"]) == 0
    assert cli.main(["pause", *schema, "emails"]) == 0
    assert cli.main(["pause", *schema]) == 0
    assert cli.main(["resume", *schema, "emails"]) == 0
    assert cli.main(["resume", *schema, "emails"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"queue 'emails' of {queue.schema}: paused",
        f"queue 'emails' of {queue.schema}: was paused already",
        f"paused in {queue.schema}: emails",
        f"queue 'emails' of {queue.schema}: resumed",
        f"queue 'emails' of {queue.schema}: was not paused",
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["cancel", "--schema", "{schema}", "12x"],
            "a job id is a positive whole number (digits 0-9), got '12x'",
        ),
        (["cancel", "--schema", "{schema}", "\u00b2"], "got '\u00b2'"),  # superscript two
        (["cancel", "--schema", "{schema}", "\u0663"], "got '\u0663'"),  # Arabic-Indic three
        (["cancel", "--schema", "{schema}", str(2**63)], "does not fit a 64-bit integer"),
        (["cancel", "--schema", "{schema}"], "the following arguments are required: ID"),
        (["pause", "--schema", "{schema}", " emails"], "queue name ' emails' has leading or trailing"),
        (["resume", "--schema", "{schema}"], "the following arguments are required: QUEUE"),
        (["cancel", "--schema", "no_such_queue_here", "1"], "does not exist in this database"),
        (["pause", "--schema", "Bad-Name", "q"], "invalid schema name"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(
    queue: Queue, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    args = [a.replace("{schema}", queue.schema) for a in argv]
    if "required" in message:  # argparse's own error: it exits
        with pytest.raises(SystemExit) as stopped:
            cli.main(args)
        assert stopped.value.code == 2
    else:
        assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_cancel_notification_with_unicode_digits_is_ignored(queue: Queue) -> None:
    """Anyone may NOTIFY the cancel channel: '\u00b2' made int() raise in the listener."""
    channel = cancel.channel(queue)
    notes = [
        psycopg.Notify(channel, "\u00b2", 1),
        psycopg.Notify(channel, "\u0663", 1),
        psycopg.Notify(channel, "7", 1),
    ]
    assert cancel.requested(queue, notes) == {7}
