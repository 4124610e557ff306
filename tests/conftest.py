"""Fixtures every test area shares: a temp model store, the local stack on one, and the
test control plane."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import kube
import pytest
from refuse_skips import pytest_runtest_makereport  # noqa: F401 (the hook, registered here)
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


@pytest.fixture(scope="session")
def control_plane() -> Iterator[Path]:
    """The admin kubeconfig of this checkout's control plane (scripts/cluster/cluster.sh):
    started, and built first when needed, on first use; stopped at the end of the session
    when the session started it."""
    with kube.running_control_plane() as kubeconfig:
        yield kubeconfig


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses the control plane is a `cluster` test (left out of
    `make test-fast`). While the binaries are not built yet, such a test waits for the cold
    build: it gets the build's time limit instead of the default one."""
    needing = [item for item in items if "control_plane" in getattr(item, "fixturenames", ())]
    for item in needing:
        item.add_marker(pytest.mark.cluster)
    if needing and not kube.built():
        for item in needing:
            item.add_marker(pytest.mark.timeout(kube.BUILD_TIMEOUT))
