"""The ``start_runner`` fixture: real runners, stopped with their children afterwards."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import patient

from runner.runner_harness import RunnerProcess, process_gone
from squarenet.store import ModelStore


@pytest.fixture
def start_runner(store: ModelStore, tmp_path: Path) -> Iterator[Callable[..., RunnerProcess]]:
    """Start local runners on ``store``; whatever is left running is stopped afterwards."""
    started: list[RunnerProcess] = []

    def start(**settings: str) -> RunnerProcess:
        runner = RunnerProcess(store, tmp_path / f"runner-{len(started)}.log", **settings)
        started.append(runner)
        return runner

    yield start
    for runner in started:
        runner.job_processes()
        if runner.process.poll() is None:
            runner.process.kill()
            runner.process.wait(timeout=patient(10))
        for pid in runner.seen_children:
            if not process_gone(pid):
                os.kill(pid, signal.SIGKILL)
