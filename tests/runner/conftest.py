"""The ``start_dispatcher`` fixture: real dispatchers, stopped with their children afterwards."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runner.runner_harness import DispatcherProcess, process_gone
from squarenet.store import ModelStore


@pytest.fixture
def start_dispatcher(
    store: ModelStore, tmp_path: Path
) -> Iterator[Callable[..., DispatcherProcess]]:
    """Start dispatchers on ``store``; whatever is left running is stopped afterwards."""
    started: list[DispatcherProcess] = []

    def start(*flags: str) -> DispatcherProcess:
        dispatcher = DispatcherProcess(store, tmp_path / f"dispatcher-{len(started)}.log", *flags)
        started.append(dispatcher)
        return dispatcher

    yield start
    for dispatcher in started:
        if dispatcher.process.poll() is None:
            dispatcher.process.kill()
            dispatcher.process.wait(timeout=10)
        for pid in dispatcher.seen_children:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
