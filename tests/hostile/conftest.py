"""Fixtures of the hostile tests: a real trainer guarded by a token, raw HTTP on a socket."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import service_env

from hostile.hostile_support import API_TOKEN
from squarenet.stack import Trainer, running_trainer

#: Small, so a few submissions fill the queue and nothing trains for long.
MAX_QUEUED = 4


@pytest.fixture(scope="module")
def guarded_trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trainer]:
    """The real trainer (gunicorn, 2 workers, job runner) with SQUARENET_API_TOKEN set."""
    root = tmp_path_factory.mktemp("guarded-trainer")
    with running_trainer(
        root / "store",
        root / "trainer.log",
        "--max-queued-jobs",
        str(MAX_QUEUED),
        env=service_env({"SQUARENET_API_TOKEN": API_TOKEN}),
    ) as trainer:
        yield trainer
