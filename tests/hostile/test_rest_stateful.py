"""Stateful schemathesis run against the real trainer, with the token, following links.

The served document declares no OpenAPI links, but schemathesis infers them from the
schemas (``Job.id`` feeds ``{job_id}``) and from the ``Location`` header of
``POST /v1/jobs``: its examples phase creates jobs, then its stateful phase chains
submit -> read -> cancel -> read on the ids the service really returned. The job runner is
paused (SIGSTOP) for the run so generated jobs stay QUEUED instead of training for minutes;
``tests/rest/test_schemathesis.py`` covers the stateless phases.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest.rest_helpers import run_schemathesis
from support import service_env

from hostile.hostile_support import API_TOKEN, children
from squarenet.stack import running_trainer

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """SIGSTOP ``pids`` for the block, SIGCONT afterwards (so SIGTERM can stop them)."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def job_runner_of(master: int) -> list[int]:
    """The job runner among the gunicorn master's children."""
    return [
        pid
        for pid in children(master)
        if b"-m\x00trainer_service.control_loop\x00" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def test_stateful_run_follows_links_with_no_failure(tmp_path: Path) -> None:
    with running_trainer(
        tmp_path / "store",
        tmp_path / "trainer.log",
        "--max-queued-jobs",
        "10000",
        env=service_env({"SQUARENET_API_TOKEN": API_TOKEN}),
    ) as trainer:
        runner = job_runner_of(trainer.process.pid)
        assert len(runner) == 1
        with paused(runner):
            run = run_schemathesis(
                trainer.base_url,
                tmp_path,
                *("--phases", "examples,stateful", "--max-examples", "30"),
                *("--header", f"Authorization: Bearer {API_TOKEN}"),
                timeout=300,
            )
        log = trainer.log()
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-8000:]
    covered = re.search(r"API Links:\s+(\d+) covered", report)
    assert covered is not None, report[-4000:]
    assert int(covered.group(1)) >= 3, report[-4000:]  # submit feeds read, cancel, plots
    assert "Traceback" not in log
