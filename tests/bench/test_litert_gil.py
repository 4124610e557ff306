"""``bench/litert_gil.py`` times each LiteRT call of a one-value Predict, alone and contended.

The probe trains a real tiny model and runs LiteRT for real; this checks that it ends well
and prints a positive time for every call in both columns, never what the numbers are.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CALLS = (
    "Interpreter.set_tensor",
    "Interpreter.invoke",
    "Interpreter.get_tensor",
    "CompiledModel write, run, read",
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_every_call_is_timed_alone_and_beside_a_busy_thread() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "litert_gil.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    for call in CALLS:
        row = re.search(rf"│ {re.escape(call)}\s+│\s+([0-9.]+) │\s+([0-9.]+) │", run.stdout)
        assert row is not None, f"no row for {call}:\n{run.stdout}"
        alone, busy = (float(value) for value in row.groups())
        assert alone > 0 and busy > 0, row.group(0)
