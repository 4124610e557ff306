"""The Flask application factory of the trainer's REST API.

Nothing happens at import time: ``create_app`` builds the app from a ``Settings`` object (or
from ``SQUARENET_*`` variables), so tests make one per temp store and gunicorn workers make
one each after they fork.
"""

from __future__ import annotations

from flask import Flask

from squarenet.store import ModelStore
from trainer_service.api import auth, labels, metrics, problems, traffic, views
from trainer_service.api.events import StreamSlots
from trainer_service.dashboard import bp as dashboard_bp
from trainer_service.dashboard.chart_data import bp as chart_data_bp
from trainer_service.runner.executor import make_executor
from trainer_service.settings import Settings, prepare_store
from trainer_service.sweeps import api as sweeps_api


def create_app(settings: Settings | None = None) -> Flask:
    """A trainer app serving the store of ``settings`` (read from the environment if None)."""
    if settings is None:
        settings = Settings()  # model_store comes from the environment
    prepare_store(settings)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = ModelStore(settings.model_store)
    executor = make_executor(settings, store)
    app.extensions["squarenet"] = views.Services(
        settings=settings,
        store=store,
        executor=executor,
        streams=StreamSlots(settings.event_streams_per_worker),
    )
    metrics.init_app(app)  # first: even refused requests are counted and timed
    token = settings.api_token.get_secret_value() if settings.api_token else None
    auth.init_app(app, token)
    problems.init_app(app)
    app.register_blueprint(views.bp)
    app.register_blueprint(labels.bp)
    app.register_blueprint(traffic.bp)
    app.register_blueprint(chart_data_bp)
    app.register_blueprint(dashboard_bp)
    app.register_blueprint(sweeps_api.bp)
    return app
