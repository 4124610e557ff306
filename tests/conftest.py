"""Fixtures every test area shares: a temp model store, the local stack on one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import service_env

from squarenet.stack import LocalStack, local_stack
from squarenet.store import ModelStore


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """An empty model store in a fresh temp folder."""
    root = tmp_path / "store"
    root.mkdir()
    return ModelStore(root)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Trainer and predictor processes on one temp store, shared by the tests of a module."""
    root = tmp_path_factory.mktemp("live")
    with local_stack(root / "store", root / "logs", env=service_env()) as stack:
        yield stack
