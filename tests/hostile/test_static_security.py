"""Static security checks: bandit over the services' code.

ruff's ``S`` rules already run in ``make lint``; bandit is a second, independent reading of
the same code. A bandit finding is accepted only on a line that already justifies it
inline with the matching ruff code (``# noqa: S603 - our own module, no shell``), so every
exception is written next to the code it excuses and a new finding anywhere else fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
SCANNED = ("trainer_service", "predictor_service", "squarenet")
#: Bandit tests whose finding is about a module being imported, not about a call: importing
#: subprocess is how the services start their own children; each call is checked by B603.
IMPORT_ONLY = {"B404"}


def bandit_command() -> list[str]:
    """bandit next to the test's interpreter (a dev dependency: missing means a broken venv)."""
    script = Path(sys.executable).with_name("bandit")
    assert script.exists(), "bandit is not installed: install the project's dev extra"
    return [str(script)]


def bandit_findings() -> list[dict[str, object]]:
    """Every finding of bandit over the scanned packages, as its JSON report gives them."""
    run = subprocess.run(
        [*bandit_command(), "-q", "-r", *SCANNED, "-f", "json"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode in (0, 1), run.stderr  # 1 means "found something", 2+ broke
    report = json.loads(run.stdout)
    assert not report["errors"], report["errors"]
    scanned = report["metrics"]["_totals"]["loc"]
    assert scanned > 1000, f"bandit read only {scanned} lines: wrong folder?"
    findings: list[dict[str, object]] = report["results"]
    return findings


def justified_inline(finding: dict[str, object]) -> bool:
    """True when the flagged line carries ``noqa: S<nnn>`` for the same check and a reason."""
    rule = "S" + str(finding["test_id"])[1:]
    line = (
        (PROJECT / str(finding["filename"]))
        .read_text(encoding="utf-8")
        .splitlines()[int(str(finding["line_number"])) - 1]
    )
    _, marker, rest = line.partition("# noqa:")
    return bool(marker) and rule in rest.replace(",", " ").split()


def test_bandit_finds_nothing_that_is_not_justified_next_to_the_code() -> None:
    unjustified = [
        f"{f['filename']}:{f['line_number']} {f['test_id']} {f['issue_text']}"
        for f in bandit_findings()
        if f["test_id"] not in IMPORT_ONLY and not justified_inline(f)
    ]
    assert unjustified == []


def test_bandit_reports_no_high_severity_finding_at_all() -> None:
    high = [f for f in bandit_findings() if f["issue_severity"] == "HIGH"]
    assert high == []
