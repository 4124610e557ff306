"""Rollouts over REST: the traffic document, the history, and what gated label moves answer.

``PUT``/``GET``/``DELETE /v1/models/{model}/traffic`` write, read and remove
``<model>/traffic.json`` (predictors follow it for calls that name no version);
``GET /v1/models/{model}/history[?at=RFC3339]`` lists every label move and traffic change,
or answers what the labels and the traffic were at one moment; ``GET
/v1/models/{model}/live`` is what the predictor at ``--predictor`` measures now.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from squarenet.rollouts import TrafficError, parse_time, parse_traffic, read_history, read_traffic
from squarenet.store import StoreError, validate_model_name
from trainer_service.api.auth import TOKEN_CONFIG_KEY
from trainer_service.api.problems import Problem
from trainer_service.api.views import read_json_body, services
from trainer_service.rollouts.gate import Thresholds
from trainer_service.rollouts.live import LiveUnavailable, live_figures, no_predictor
from trainer_service.rollouts.moves import change_traffic, state_at

bp = Blueprint("traffic", __name__)

TRAFFIC_PATH = "/v1/models/<model_name>/traffic"
HISTORY_PATH = "/v1/models/<model_name>/history"
LIVE_PATH = "/v1/models/<model_name>/live"


class GateProblem(Problem):
    """409: the gate refused a label move; the problem document carries the gate report."""

    def __init__(self, detail: str, report: dict[str, Any]) -> None:
        super().__init__(409, detail, kind="gate-failed")
        self.report = report

    def to_response(self) -> Response:
        """The problem document with ``gate``: every check, its value and its limit."""
        response = super().to_response()
        document = json.loads(response.get_data(as_text=True))
        document["gate"] = self.report
        response.set_data(json.dumps(document, ensure_ascii=False, allow_nan=False))
        return response


def who() -> dict[str, str]:
    """Who asked: the API token (when the trainer has one) and the client's address."""
    by = {"client": request.remote_addr or "unknown"}
    if current_app.config.get(TOKEN_CONFIG_KEY):
        by["token"] = "api-token"  # noqa: S105 - the name the history records, not a token
    return by


def thresholds() -> Thresholds:
    """The gate's thresholds from the trainer's settings."""
    settings = services().settings
    return Thresholds(
        max_floor_ratio=settings.gate_max_floor_ratio,
        agreement_tolerance=settings.gate_agreement_tolerance,
        max_regression=settings.gate_max_regression,
    )


def _known_model(model_name: str) -> str:
    try:
        validate_model_name(model_name)
    except ValueError as exc:
        raise Problem(404, f"no model {model_name!r}", kind="not-found") from exc
    if not services().store.model_dir(model_name).is_dir():
        raise Problem(404, f"no model {model_name!r}", kind="not-found")
    return model_name


def _traffic_answer(model_name: str) -> dict[str, Any]:
    store = services().store
    try:
        traffic = read_traffic(store, model_name)
    except StoreError as exc:
        raise Problem(503, str(exc), kind="store-unavailable") from exc
    return {"model_name": model_name, "traffic": traffic.to_document() if traffic else None}


@bp.put(TRAFFIC_PATH)
def put_traffic(model_name: str) -> Response:
    """Replace the traffic document (422 naming the field when it is not usable)."""
    _known_model(model_name)
    store = services().store
    document = read_json_body("the traffic document", empty=None)
    try:
        traffic = parse_traffic(document, store.read_labels(model_name))
    except TrafficError as exc:
        raise Problem.invalid(exc.field, exc.message) from exc
    change_traffic(store, model_name, traffic, by=who())
    return jsonify(_traffic_answer(model_name))


@bp.get(TRAFFIC_PATH)
def get_traffic(model_name: str) -> Response:
    """The traffic document (``traffic`` null: calls follow each predictor's served label)."""
    _known_model(model_name)
    return jsonify(_traffic_answer(model_name))


@bp.delete(TRAFFIC_PATH)
def delete_traffic(model_name: str) -> Response:
    """Remove the traffic document: back to the served label (404 when there is none)."""
    _known_model(model_name)
    store = services().store
    if read_traffic(store, model_name) is None:
        raise Problem(404, f"{model_name} has no traffic document", kind="not-found")
    change_traffic(store, model_name, None, by=who())
    return jsonify(_traffic_answer(model_name))


@bp.get(HISTORY_PATH)
def get_history(model_name: str) -> Response:
    """Every label move and traffic change, oldest first; with ``?at=``, the state then."""
    _known_model(model_name)
    store = services().store
    at = request.args.get("at")
    if at is None:
        return jsonify({"model_name": model_name, "history": list(read_history(store, model_name))})
    try:
        moment = parse_time(at)
    except ValueError as exc:
        message = f"must be an RFC 3339 time with an offset, e.g. 2026-01-02T03:04:05Z ({exc})"
        raise Problem.invalid("at", message) from exc
    return jsonify({"model_name": model_name, "at": at, **state_at(store, model_name, moment)})


@bp.get(LIVE_PATH)
def get_live(model_name: str) -> Response:
    """The predictor's live exact error per loaded version (against its floor) and route."""
    _known_model(model_name)
    target = services().settings.predictor
    if target is None:  # nothing to ask: say so, with nothing measured
        return jsonify(no_predictor(model_name))
    try:
        return jsonify(live_figures(services().store, model_name, target))
    except LiveUnavailable as exc:
        raise Problem(exc.status, exc.detail, kind=exc.kind) from exc
