"""``pgqueue-lab bench`` runs end to end, tiny: the table, the CSV, the ratios.

Only the machinery is checked; the figures themselves are never asserted (they depend on the
machine and on whatever else runs on it).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue_lab import bench, cli

DRAIN = [
    "raw loop, 8 threads, batch 50",
    "Worker, 1 thread, batch 50",
    "Worker, 2 threads, batch 50",
    "Worker, 4 threads, batch 50",
    "Worker, 8 threads, batch 50",
    "seed's algorithm, 8 threads",
]
ENQUEUE = ["COPY, 1000 rows/txn", "enqueue_many, 1000 jobs/call", "enqueue, 1 job/call"]
WAKEUP = ["raw LISTEN loop", "Worker, LISTEN", "Worker, polling every 100 ms"]
LATENCY = ["raw LISTEN loop, idle", "Worker, idle", "raw LISTEN loop, busy", "Worker, busy"]
IO = [f"Worker, {n} thread{'s' if n > 1 else ''}, 5 ms sleeps, batch 10" for n in (1, 2, 4, 8, 16)]


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _leftover_schemas(conn: psycopg.Connection[Any]) -> list[str]:
    """The bench's schemas now in the database (a soak running elsewhere is not ours to count)."""
    rows = conn.execute(
        "SELECT nspname FROM pg_namespace"
        " WHERE nspname LIKE 'bench\\_%' AND nspname NOT LIKE 'bench\\_soak\\_%'"
    ).fetchall()
    return [name for (name,) in rows]


def test_bench_prints_every_figure_with_its_ratio_and_writes_the_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], conn: psycopg.Connection[Any]
) -> None:
    before = set(_leftover_schemas(conn))
    out = tmp_path / "bench.csv"
    assert cli.main(["bench", "--quick", "--jobs", "300", "--repeats", "1", "--csv", str(out)]) == 0

    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("section"))
    assert header.split() == [c for c in bench.COLUMNS if c != "runs"]
    for name in DRAIN + ENQUEUE + WAKEUP + LATENCY + IO:
        assert name in printed
    assert f"wrote 31 rows to {out}" in printed

    columns, rows = _read_csv(out)
    assert columns == list(bench.COLUMNS)
    assert [(r["section"], r["workload"]) for r in rows] == (
        [("drain", n) for n in DRAIN]
        + [("enqueue", n) for n in ENQUEUE]
        + [("wake-up", n) for _ in range(3) for n in WAKEUP]
        + [("latency", n) for pair in (LATENCY[:2], LATENCY[2:]) for _ in range(2) for n in pair]
        + [("io-bound", n) for n in IO]
    )
    assert [r["metric"] for r in rows if r["section"] == "wake-up"] == ["p50 ms"] * 3 + ["p95 ms"] * 3 + [
        "p99 ms"
    ] * 3
    one_thread = float(rows[-len(IO)]["value"])
    for n, row in zip((1, 2, 4, 8, 16), rows[-len(IO) :], strict=True):  # N threads against N x one
        assert row["baseline"] == f"{n} x {IO[0]}"
        expected = float(row["value"]) / (n * one_thread)
        assert float(row["ratio"]) == pytest.approx(expected, rel=0.05, abs=0.01)
        assert int(row["count"]) == 20 * n
    for row in rows[: -len(IO)]:  # the baseline is a row of the same section and metric; ratio = value / its
        (baseline,) = [
            r
            for r in rows
            if (r["section"], r["workload"], r["metric"]) == (row["section"], row["baseline"], row["metric"])
        ]
        assert float(row["value"]) > 0
        expected = float(row["value"]) / float(baseline["value"])
        assert float(row["ratio"]) == pytest.approx(expected, rel=0.05, abs=0.01)
    assert {r["ratio"] for r in rows if r["workload"] == r["baseline"]} == {"1.000"}
    targets = {(r["workload"], r["metric"]): (r["target"], r["met"]) for r in rows if r["target"]}
    assert set(targets) == {
        ("Worker, 8 threads, batch 50", "jobs/s"),
        ("enqueue_many, 1000 jobs/call", "rows/s"),
        ("Worker, LISTEN", "p99 ms"),
        *((name, "jobs/s") for name in IO[1:]),
    }
    assert all(met in ("yes", "NO") for _, met in targets.values())
    counts = {r["workload"]: int(r["count"]) for r in rows if r["section"] in ("drain", "enqueue")}
    assert counts["raw loop, 8 threads, batch 50"] == counts["seed's algorithm, 8 threads"] == 300
    assert set(_leftover_schemas(conn)) <= before  # every workload dropped its schema


def test_soak_reports_each_interval_against_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "soak.csv"
    assert cli.main(["bench", "--soak", "2", "--csv", str(out)]) == 0
    assert "soak: 2 s" in capsys.readouterr().out
    columns, rows = _read_csv(out)
    assert columns == list(bench.COLUMNS)
    assert [r["workload"] for r in rows] == ["0-1 s", "1-2 s"]
    assert all(r["baseline"] == "first 1 s" and float(r["value"]) > 0 for r in rows)
    assert rows[0]["ratio"] == "1.000"
    assert rows[1]["target"] == ">= 0.8" and rows[1]["met"] in ("yes", "NO")


@pytest.mark.skipif(
    bool(bench.peers.missing()), reason="the bench extra (pgqueuer, procrastinate) is not installed"
)
def test_peers_drain_beside_the_worker_and_clean_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], conn: psycopg.Connection[Any]
) -> None:
    out = tmp_path / "peers.csv"
    assert cli.main(["bench", "--peers", "--quick", "--jobs", "100", "--csv", str(out)]) == 0
    assert "peers: 100 jobs (procrastinate 10)" in capsys.readouterr().out
    _, rows = _read_csv(out)
    assert [r["workload"].split(",")[0].split()[0] for r in rows] == [
        "Worker",
        "pgqueuer",
        "procrastinate",
    ] * 2
    assert [int(r["count"]) for r in rows] == [100, 100, 10] * 2
    for row in rows:  # each beside the best peer at its concurrency
        assert row["baseline"] in {r["workload"] for r in rows if r["workload"].startswith(("pgq", "proc"))}
        worker = row["workload"].startswith("Worker")
        assert (row["target"], row["met"]) in ({(">= 3", "yes"), (">= 3", "NO")} if worker else {("", "")})
    left = conn.execute(
        "SELECT count(*) FROM pg_namespace"
        " WHERE nspname LIKE 'bench\\_pgqueuer\\_%' OR nspname LIKE 'bench\\_procrastinate\\_%'"
    ).fetchone()
    assert left == (0,)  # each peer's schema dropped


def test_peers_without_the_extra_is_one_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench.peers, "missing", lambda: ["procrastinate"])
    assert cli.main(["bench", "--peers", "--quick"]) == 2
    assert "--peers needs procrastinate: pip install 'pgqueue-lab[bench]'" in capsys.readouterr().err


def test_bench_refuses_a_non_positive_option(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--jobs", "0"]) == 2
    assert "jobs must be positive" in capsys.readouterr().err


def test_percentile_interpolates() -> None:
    assert bench.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert bench.percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    assert bench.percentile([5.0], 99) == 5.0
