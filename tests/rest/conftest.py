"""Fixtures of the REST tests: an app on a temp store, its test client, and real artefacts."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from rest.rest_helpers import MakeApp
from squarenet.store import ModelStore
from trainer_service.api.app import create_app
from trainer_service.settings import Settings


@pytest.fixture
def make_app(store: ModelStore) -> MakeApp:
    """Build an app on the temp store; keyword arguments override settings."""

    def build(**overrides: Any) -> Flask:
        settings = Settings.model_validate({"model_store": store.root, **overrides})
        app = create_app(settings)
        app.testing = True
        return app

    return build


@pytest.fixture
def app(make_app: MakeApp) -> Flask:
    """An app with default settings and no job runner: submitted jobs stay QUEUED."""
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """Flask's test client of ``app``."""
    return app.test_client()
