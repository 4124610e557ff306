"""A skipped test fails where skips are refused (``SQUARENET_REFUSE_SKIPS=1``, set by .ci/run).

A test that skips itself there (no Docker engine, no tmpfs mount) marks a capability the
machine lacks; a silent pass would hide it, so CI reports it as a failure with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest


def skips_refused() -> bool:
    """True where a skip must fail (read per test, so a test can check this very hook)."""
    return os.environ.get("SQUARENET_REFUSE_SKIPS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Report a skip (not an expected failure) as failed, with its reason, when refused."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and skips_refused():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped where skips are refused (SQUARENET_REFUSE_SKIPS=1): {reason}"
