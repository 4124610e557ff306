"""Fixtures for the predictor: real trained versions and real ``squarenet-predictor`` processes.

Two versions are trained once per test run by the real trainer; each test copies the ones
it needs into its own temp store, publishing them like the trainer does.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from predictor.predictor_harness import Launcher
from squarenet.store import ModelStore


@pytest.fixture(scope="session")
def trained_versions(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two version folders published by the real trainer (tiny data, seeds 1 and 2)."""
    from trainer_service.params import TrainingParams
    from trainer_service.training import train_and_publish

    root = tmp_path_factory.mktemp("trained")
    store = ModelStore(root / "store")
    folders = []
    for seed in (1, 2):
        params = TrainingParams.model_validate(
            {
                "n_samples": 400,
                "epochs": 100,
                "batch_size": 320,
                "learning_rate": 0.05,
                "seed": seed,
            }
        )
        outcome = train_and_publish(
            params, store, job_id=f"job-seed-{seed}", artifacts_dir=root / f"artifacts-{seed}"
        )
        folders.append(outcome.version.path)
    return folders


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Predictor processes for one test, killed at teardown."""
    launcher = Launcher(tmp_path)
    yield launcher
    launcher.close_all()
