"""``pgqueue-lab demo`` reproduces the seed example's expected output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DATA = Path(__file__).parent / "data"
SEED = (DATA / "seed_expected_output.txt").read_text().splitlines()
EXPECTED = (DATA / "demo_expected_output.txt").read_text()

#: The shape of every line the seed's output shows (its "..." stands for more of the same).
SEED_SHAPES = [
    r"Schema created\.",
    r"",
    r"=== (Enqueueing Jobs|Processing Jobs|Final Job Status) ===",
    r"  Enqueued job #\d+: \w+",
    r"  Worker claimed job #\d+ \(\w+\)",
    r"    \S.*",  # what the handler says, then "Completed!" or "Failed: ..."
    r"  Job #\d+: \w+ - (completed|failed)",
    r"Done!",
]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


def test_demo_output_is_exact() -> None:
    result = _run("-m", "pgqueue_lab.tools.cli", "demo")
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED
    assert result.stderr == ""


def test_python_dash_m_runs_the_demo() -> None:
    result = _run("-m", "pgqueue_lab")
    assert (result.returncode, result.stdout) == (0, EXPECTED)


def test_demo_follows_the_seed_line_for_line() -> None:
    lines = EXPECTED.splitlines()
    # every line of the demo has one of the seed's shapes
    for line in lines:
        assert any(re.fullmatch(shape, line) for shape in SEED_SHAPES), (
            f"line not in the seed's shape: {line!r}"
        )
    # every concrete line the seed shows appears, in the seed's order
    position = 0
    for seed_line in SEED:
        if seed_line.strip() == "...":
            continue
        assert seed_line in lines[position:], f"seed line missing or out of order: {seed_line!r}"
        position = lines.index(seed_line, position) + 1
    # jobs are listed in id order in each section, and at least one failed
    enqueued = [int(m) for m in re.findall(r"Enqueued job #(\d+)", EXPECTED)]
    final = [int(m) for m in re.findall(r"  Job #(\d+):", EXPECTED)]
    assert enqueued == final == sorted(final) and len(final) >= 5
    assert "- failed" in EXPECTED and "- completed" in EXPECTED


def test_demo_leaves_no_schema_behind(conn) -> None:  # type: ignore[no-untyped-def]
    _run("-m", "pgqueue_lab.tools.cli", "demo")
    row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = 'pgqueue_lab_demo'").fetchone()
    assert row == (0,)
