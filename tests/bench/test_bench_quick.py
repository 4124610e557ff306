"""``bench/run_all.py --quick`` runs every benchmark and writes one well-formed table.

The benchmarks start real services (trainer, predictor, reference servers) and train real
tiny models, so these tests are slow. They check that every figure, baseline and ratio is
produced and readable, never what the numbers are: speed is the benchmarks' business.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN_ALL = ROOT / "bench" / "run_all.py"
COLUMNS = ["figure", "squarenet", "baseline", "ratio", "goal", "met"]
# a delay measured from the record's SUCCEEDED can be negative: the version is published first
RATIO = re.compile(r"^(-|-?[0-9][0-9,]*\.[0-9]+x( faster)?)$")
SECONDS = re.compile(r"^-?[0-9]+\.[0-9]+ s\b")

# every benchmark in quick mode, one after another: minutes on a busy 2-core machine
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def run_all(output: Path, *flags: str, env: dict[str, str] | None = None) -> Any:
    """Run the suite's entry point as ``make bench`` does (quick mode), return the process."""
    return subprocess.run(
        [sys.executable, str(RUN_ALL), "--quick", "--output", str(output), *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """One quick run of every benchmark, shared by the checks below."""
    output = tmp_path_factory.mktemp("bench")
    return run_all(output), output


def rows(output: Path) -> list[dict[str, Any]]:
    document = json.loads((output / "results.json").read_text())
    assert document["quick"] is True
    return list(document["rows"])


def test_every_benchmark_runs_and_the_run_succeeds(quick_run: tuple[Any, Path]) -> None:
    process, output = quick_run
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    document = json.loads((output / "results.json").read_text())
    names = [benchmark["name"] for benchmark in document["benchmarks"]]
    assert names == [
        "training",
        "serving",
        "wire",
        "train-to-served",
        "trainer-start",
        "dashboard",
        "protocols",
        "sweep",
        "rollouts",
        "search",
        "warm-pool",
        "grown-store",
    ]
    assert all(benchmark["error"] is None for benchmark in document["benchmarks"])


def test_every_goal_of_the_brief_has_a_row(quick_run: tuple[Any, Path]) -> None:
    _, output = quick_run
    figures = " / ".join(row["figure"] for row in rows(output))
    for expected in (
        "training time, article settings",
        "in-domain MSE, article settings",
        "default settings: worst in-domain MSE",
        "p50 latency, 1 value",
        "calls/s, 1 value, concurrency 8",
        "calls/s, 1 value, concurrency 64",
        "predictions/s, 1000 values",
        "ceiling: aio echo vs sync echo",
        "p99.9 latency",
        "wire: own Predict, 1,000 values",
        "SUCCEEDED → WatchModel",
        "SUCCEEDED → first Predict",
        "cold start to SERVING",
        "trainer cold start",
        "dashboard: jobs page rendered, 1000 jobs in the store",
        "dashboard: trainer CPU per epoch, one dashboard open",
        "-trial sweep",
        "calls/s, 1 value, concurrency 8, 90/10 split",
        "gate: judge a label move",
        "search: tpe + medianstop + skipBelowFloor, CPU to the goal",
        "warm pool: first job after /readyz 200",
        "warm pool: 8 jobs at once",
        "settled sweeps and 1 running",
        "GET /v1/models, ",
        "-trial sweep (200, a PNG)",
        "event stream poll",
    ):
        assert expected in figures


def test_rows_are_well_formed(quick_run: tuple[Any, Path]) -> None:
    _, output = quick_run
    table = rows(output)
    assert table
    for row in table:
        assert row["met"] in {"yes", "no", "-"}, row
        assert RATIO.match(row["ratio"]), row
        assert row["squarenet"] not in {"", "error"}, row
        assert row["goal"], row


def test_lifecycle_rows_carry_their_distribution_and_baseline(
    quick_run: tuple[Any, Path],
) -> None:
    _, output = quick_run
    lifecycle = [row for row in rows(output) if row["raw"].get("bench") == "lifecycle"]
    assert {row["raw"]["figure"] for row in lifecycle} == {
        "served_watch_seconds",
        "served_predict_seconds",
        "published_watch_seconds",
        "trainer_start_seconds",
    }
    for row in lifecycle:
        raw = row["raw"]
        assert SECONDS.match(row["squarenet"]), row
        assert raw["baseline"] > 0
        assert raw["ratio"] == pytest.approx(raw["value"] / raw["baseline"])
        assert raw["met"] in (True, False, None)
        if raw["figure"] != "trainer_start_seconds":
            assert len(raw["values"]) == 3  # --quick: three publishes
            assert raw["value"] <= raw["p90"] <= raw["max"]


def test_markdown_table_matches_the_json(quick_run: tuple[Any, Path]) -> None:
    process, output = quick_run
    text = (output / "results.md").read_text()
    assert "`python bench/run_all.py --quick`" in text
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0] == "| " + " | ".join(COLUMNS) + " |"
    assert len(lines) == 2 + len(rows(output))
    assert "squarenet benchmarks" in process.stdout  # the terminal table was printed too


def test_each_benchmark_printed_its_own_table(quick_run: tuple[Any, Path]) -> None:
    _, output = quick_run
    logs = {name: (output / f"{name}.log").read_text() for name in
            ("training", "serving", "train-to-served", "trainer-start", "sweep")}  # fmt: skip
    assert "Article configuration" in logs["training"]
    assert "Serving (one run on this machine)" in logs["serving"]
    assert "Train → served" in logs["train-to-served"]
    assert "polls the store" in logs["train-to-served"]
    assert "Trainer cold start" in logs["trainer-start"]
    assert "4-trial sweep, 40 epochs" in logs["sweep"]


def test_a_failing_benchmark_shows_as_error_and_fails_the_run(tmp_path: Path) -> None:
    """A trainer that cannot start (bad configuration, exit 2) makes trainer-start fail."""
    process = run_all(tmp_path, "--only", "trainer-start", env={"SQUARENET_WORKERS": "0"})
    assert process.returncode == 1
    assert "error" in process.stdout
    (row,) = rows(tmp_path)
    assert row["figure"] == "trainer-start benchmark"
    assert row["met"] == "error"
    assert "exit" in row["goal"]
