"""The Flask application factory of the trainer's REST API.

Nothing happens at import time: ``create_app`` builds the app from a ``Settings`` object (or
from ``SQUARENET_*`` variables), so tests make one per temp store and gunicorn workers make
one each after they fork. The app is a flask-openapi3 ``OpenAPI``: each route module's
operations (``jobs``, ``models``, ``labels``, ``traffic``, ``sweeps``, ``operations``, the
dashboard) add themselves to the document served at ``/openapi.json``.
"""

from __future__ import annotations

from flask_openapi3.models.info import Info
from flask_openapi3.openapi import OpenAPI

from squarenet.store import ModelStore
from trainer_service.api import (
    auth,
    jobs,
    labels,
    metrics,
    models,
    operations,
    problems,
    sweeps,
    traffic,
)
from trainer_service.api.events import StreamSlots
from trainer_service.api.http import JsonRequest
from trainer_service.api.services import Services
from trainer_service.dashboard import bp as dashboard_bp
from trainer_service.runner.executor import make_executor
from trainer_service.settings import Settings, prepare_store

INFO = Info(
    title="squarenet trainer",
    version="1",
    description="Train a 1-hidden-layer ReLU network on y = x² and publish it to the model "
    "store. Reads are open; POST, PUT, PATCH and DELETE need a bearer token when "
    "SQUARENET_API_TOKEN is set.",
)


def create_app(settings: Settings | None = None) -> OpenAPI:
    """A trainer app serving the store of ``settings`` (read from the environment if None)."""
    if settings is None:
        settings = Settings()  # model_store comes from the environment
    prepare_store(settings)
    app = OpenAPI(
        __name__,
        info=INFO,
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        validation_error_model=problems.ProblemDetails,
        validation_error_callback=problems.raise_invalid,
        doc_ui=False,  # the document is served by operations.openapi; no UI pages
    )
    app.request_class = JsonRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = ModelStore(settings.model_store)
    app.extensions["squarenet"] = Services(
        settings=settings,
        store=store,
        executor=make_executor(settings, store),
        streams=StreamSlots(settings.event_streams_per_worker),
    )
    metrics.init_app(app)  # first: even refused requests are counted and timed
    token = settings.api_token.get_secret_value() if settings.api_token else None
    auth.init_app(app, token)
    problems.init_app(app)
    for module in (jobs, models, labels, traffic, sweeps, operations):
        app.register_api(module.bp)
    app.register_api(dashboard_bp)
    return app
