"""Fixtures of the sweep tests: an app without a job runner on a temp store, and a stand-in."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from squarenet.store import ModelStore
from sweeps.sweep_support import StandInRunner
from trainer_service.api.app import create_app
from trainer_service.runner.executor import Executor
from trainer_service.settings import Settings


@pytest.fixture
def app(store: ModelStore) -> Flask:
    """The real app on the temp store, queue bound 8, cancels answered at once."""
    settings = Settings.model_validate({"model_store": store.root, "max_queued_jobs": 8})
    app = create_app(settings)
    app.testing = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask's test client of ``app``."""
    return app.test_client()


@pytest.fixture
def executor(app: Flask) -> Executor:
    """The app's own (local) executor: what the controller submits and cancels through."""
    found: Executor = app.extensions["squarenet"].executor
    return found


@pytest.fixture
def runner(executor: Executor) -> StandInRunner:
    """Plays the job runner's part on the app's job book."""
    return StandInRunner(executor.book)
