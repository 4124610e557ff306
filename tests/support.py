"""Helpers the tests share: waiting for a condition, the services' environment; free ports
and whether a service is up come from ``squarenet.stack`` (import as ``support``)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import pytest

from squarenet.stack import free_port, predictor_answers, trainer_ready

__all__ = ["free_port", "predictor_answers", "service_env", "trainer_ready", "wait_for"]

T = TypeVar("T")


def service_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without SQUARENET_* settings that would change the services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUARENET_")}
    env.update(extra or {})
    return env


def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, every: float = 0.05
) -> T:
    """Poll ``condition`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
