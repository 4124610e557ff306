"""Helpers the tests share: waiting for a condition, the services' environment; free ports
and whether a service is up come from ``squarenet.stack`` (import as ``support``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import pytest

from squarenet.stack import free_port, predictor_answers, trainer_ready

__all__ = [
    "PATIENCE",
    "free_port",
    "patient",
    "predictor_answers",
    "service_env",
    "trainer_ready",
    "wait_for",
]

T = TypeVar("T")

#: Every budget a test names is what the event needs on a quiet machine; CI machines are
#: often saturated (load averages of 16-26 were seen), where the same event can take several
#: times as long. A budget only bounds how long a broken test hangs before it fails: a
#: passing test never waits it out, so stretching it costs nothing. SQUARENET_TEST_PATIENCE
#: changes the stretch (1 gives the quiet-machine budgets, for hunting a slow path).
PATIENCE = float(os.environ.get("SQUARENET_TEST_PATIENCE", "5"))


def patient(seconds: float) -> float:
    """A quiet-machine budget stretched for a busy one (see ``PATIENCE``)."""
    return seconds * PATIENCE


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without SQUARENET_* settings that would change the services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUARENET_")}
    env.update(extra or {})
    return env


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, every: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``
    seconds of a quiet machine (stretched by ``PATIENCE``)."""
    deadline = time.monotonic() + patient(timeout)
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {patient(timeout):g}s waiting for {what}")
        time.sleep(every)
