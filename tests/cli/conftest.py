"""Fixtures of the CLI tests: the real services on one temp store (started only when used)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from e2e.live_services import LiveServices, live_services


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServices]:
    """Trainer and predictor processes, shared by the tests of one module."""
    with live_services(tmp_path_factory.mktemp("live")) as running:
        yield running
