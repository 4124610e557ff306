"""A trainer started on a store it cannot write answers its probes instead of crash-looping.

A new Filestore share is ``root:root 0755`` and the trainer runs as uid 10001. Exiting at
start would put the pod in CrashLoopBackOff, whose back-off grows to five minutes, so an
admin's fix (``k8s/admin/own-the-store.yaml``, a ``chown``) would take minutes to show.
Instead each gunicorn worker serves through :class:`StoreGate` while the store is not
writable: ``/healthz`` answers 200 (the process is alive, so liveness does not restart it),
every other path 503 ``store-not-writable`` naming the folder, its owner and our uid (so
readiness keeps traffic away and a client reads why). The first request after the store
becomes writable builds the full app, and every request from then on goes to it: no restart.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response, jsonify, request

from trainer_service.api import problems
from trainer_service.api.problems import RETRY_AFTER_SECONDS, Problem
from trainer_service.settings import Settings, store_problem

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

PROBLEM_KIND = "store-not-writable"


class StoreGate:
    """A WSGI app: the waiting answers until the store is writable, then the full app."""

    def __init__(self, settings: Settings, build: Callable[[Settings], Flask]) -> None:
        self._settings = settings
        self._build = build
        self._lock = threading.Lock()
        self._app: Flask | None = None
        self._problem = store_problem(settings)
        if self._problem is None:
            self._app = build(settings)
        self._waiting = _waiting_app(lambda: self._problem or "")

    @property
    def app(self) -> Flask | None:
        """The full app once the store has been writable, else None."""
        return self._app

    def _open(self) -> Flask | None:
        """Check the store again (one probe file) and build the full app if it is writable."""
        with self._lock:
            if self._app is None:
                self._problem = store_problem(self._settings)
                if self._problem is None:
                    self._app = self._build(self._settings)
            return self._app

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        app = self._app or self._open()
        chosen: WSGIApplication = app if app is not None else self._waiting
        return chosen(environ, start_response)


def _waiting_app(problem: Callable[[], str]) -> Flask:
    """``/healthz`` 200, everything else the store's problem as a 503."""
    app = Flask(__name__)
    problems.init_app(app)

    @app.get("/healthz")
    def healthz() -> Response:
        return jsonify({"status": "ok"})

    @app.before_request
    def refuse() -> None:
        if request.path != "/healthz":
            raise Problem(
                503,
                problem(),
                kind=PROBLEM_KIND,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )

    return app
