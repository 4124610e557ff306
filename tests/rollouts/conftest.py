"""Fixtures of the rollout tests: real trained versions (good ones and a deliberately bad one),
copied into each test's own store, and the trainer app on that store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from predictor.predictor_harness import Launcher

from rollouts.rollout_support import Trained
from squarenet.store import ModelStore
from trainer_service.api.app import create_app
from trainer_service.settings import Settings

#: Enough data and epochs to land within a few times the floor, in a few seconds.
GOOD = {"n_samples": 2000, "epochs": 200, "batch_size": 500, "learning_rate": 0.02}


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """Version folders published by the real trainer: two good seeds and one bad network."""
    from trainer_service.params import TrainingParams
    from trainer_service.training import train_and_publish

    root = tmp_path_factory.mktemp("rollout-versions")
    store = ModelStore(root / "store")
    folders: dict[str, Path] = {}
    wanted: dict[str, dict[str, Any]] = {
        "good": {**GOOD, "seed": 1},
        "other": {**GOOD, "seed": 2},
        "bad": {**GOOD, "seed": 1, "num_neurons": 1},  # about 3,000 times the good one's MSE
    }
    for name, params in wanted.items():
        outcome = train_and_publish(
            TrainingParams.model_validate(params),
            store,
            job_id=f"job-{name}",
            artifacts_dir=root / f"artifacts-{name}",
        )
        folders[name] = outcome.version.path
    return Trained(folders)


@pytest.fixture
def app(store: ModelStore) -> Flask:
    """The trainer's app on the test's store, default settings (default gate thresholds)."""
    application = create_app(Settings.model_validate({"model_store": store.root}))
    application.testing = True
    return application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask's test client of ``app``."""
    return app.test_client()


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    """Predictor processes for one test, killed at teardown."""
    started = Launcher(tmp_path)
    yield started
    started.close_all()
