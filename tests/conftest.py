"""Fixtures every test area shares: a temp model store."""

from __future__ import annotations

from pathlib import Path

import pytest

from squarenet.store import ModelStore


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    """An empty model store in a fresh temp folder."""
    root = tmp_path / "store"
    root.mkdir()
    return ModelStore(root)
