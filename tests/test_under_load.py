"""``scripts/under-load.sh`` (``make test-under-load``): saturates the cores, runs the rounds,
and stops its load whatever the command did."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from runner.runner_harness import process_gone
from support import patient, wait_for

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "under-load.sh"


def under_load(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *argv],
        capture_output=True,
        text=True,
        timeout=patient(60),
        check=False,
    )


def load_pid(stderr: str) -> int:
    found = re.search(r"stress-ng --cpu \d+ \(pid (\d+)\)", stderr)
    assert found, stderr
    return int(found.group(1))


def test_every_round_runs_and_the_load_stops() -> None:
    done = under_load("--rounds", "3", "true")
    assert done.returncode == 0, done.stderr
    assert [int(n) for n in re.findall(r"round (\d)/3 exited 0", done.stderr)] == [1, 2, 3]
    pid = load_pid(done.stderr)
    wait_for(lambda: process_gone(pid), 10, "stress-ng to be stopped")


def test_a_failing_round_ends_the_run_with_its_code_and_stops_the_load() -> None:
    done = under_load("--rounds", "3", "sh", "-c", "exit 3")
    assert done.returncode == 3
    assert "round 1/3 exited 3" in done.stderr and "round 2/3" not in done.stderr
    wait_for(lambda: process_gone(load_pid(done.stderr)), 10, "stress-ng to be stopped")


@pytest.mark.parametrize("argv", [(), ("--rounds", "2")])
def test_without_a_command_it_says_how_to_call_it(argv: tuple[str, ...]) -> None:
    done = under_load(*argv)
    assert done.returncode == 2 and "usage:" in done.stderr
