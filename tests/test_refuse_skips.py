"""The hook that turns a skip into a failure in CI, run on a test suite of its own."""

from __future__ import annotations

import pytest

SUITE = """
import pytest

def test_lacks_a_capability():
    pytest.skip("no such engine here")

@pytest.mark.xfail(reason="a known bug")
def test_known_bug():
    assert False

def test_fine():
    pass
"""


@pytest.mark.parametrize(("refused", "failed", "skipped"), [("1", 1, 0), ("", 0, 1)])
def test_a_skip_fails_only_where_skips_are_refused(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    refused: str,
    failed: int,
    skipped: int,
) -> None:
    monkeypatch.setenv("SQUARENET_REFUSE_SKIPS", refused)
    pytester.makeconftest("from refuse_skips import pytest_runtest_makereport  # noqa: F401\n")
    pytester.makepyfile(SUITE)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=failed, skipped=skipped, xfailed=1)
    if refused:
        result.stdout.fnmatch_lines(["*skipped where skips are refused*no such engine here*"])
