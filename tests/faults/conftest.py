"""Fixtures of the fault tests: one real trained version per run, predictor processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from predictor.predictor_harness import Launcher

from squarenet.store import ModelStore


@pytest.fixture(scope="session")
def trained_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A version folder published by the real training code (tiny data, trained once)."""
    from trainer_service.params import TrainingParams
    from trainer_service.training import train_and_publish

    root = tmp_path_factory.mktemp("faults-trained")
    params = TrainingParams(n_samples=200, epochs=3, batch_size=32, seed=1)
    outcome = train_and_publish(
        params, ModelStore(root / "store"), job_id="faults-seed", artifacts_dir=root / "artifacts"
    )
    return outcome.version.path


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Predictor processes of one test, stopped at teardown."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close_all()
