"""A closed port: exit 3 and one line on stderr naming where the service was expected."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import free_port

SQUARENET = str(Path(sys.executable).parent / "squarenet")


@pytest.mark.parametrize(
    "command", [["jobs"], ["models"], ["job", "x"], ["cancel", "x"], ["train", "--epochs", "1"]]
)
def test_trainer_unreachable(command: list[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [SQUARENET, "--trainer", url, *command],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"squarenet: cannot reach the trainer at {url}")
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", [["predict", "1", "-2"], ["watch"]])
def test_predictor_unreachable(command: list[str]) -> None:
    target = f"127.0.0.1:{free_port()}"
    done = subprocess.run(
        [SQUARENET, "--predictor", target, *command],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"squarenet: cannot reach the predictor at {target}")
    assert "Traceback" not in done.stderr
