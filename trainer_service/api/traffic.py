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

from flask import Response, current_app, request
from flask_openapi3.blueprint import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field

from squarenet.rollouts import (
    MAX_ROUTES,
    TrafficError,
    parse_time,
    parse_traffic,
    read_history,
    read_traffic,
)
from squarenet.store import LABEL_PATTERN, StoreError
from trainer_service.api.auth import TOKEN_CONFIG_KEY
from trainer_service.api.http import TOKEN, answer, read_json_body, refusals
from trainer_service.api.models import ModelPath
from trainer_service.api.problems import Problem
from trainer_service.api.services import services
from trainer_service.rollouts.gate import Thresholds
from trainer_service.rollouts.live import LiveUnavailable, live_figures, no_predictor
from trainer_service.rollouts.moves import change_traffic, state_at

bp = APIBlueprint("traffic", __name__)

TRAFFIC_PATH = "/v1/models/<model_name>/traffic"
HISTORY_PATH = "/v1/models/<model_name>/history"
LIVE_PATH = "/v1/models/<model_name>/live"


class TrafficRoute(BaseModel):
    """One label and its share of the calls that name no version."""

    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field(pattern=LABEL_PATTERN.pattern, description="An existing version label.")
    weight: int = Field(ge=0, le=100, description="Percent of the calls; all weights sum to 100.")


class ShadowShare(BaseModel):
    """A label that also runs a share of the calls, only to be measured."""

    model_config = ConfigDict(extra="forbid", strict=True)

    label: str = Field(pattern=LABEL_PATTERN.pattern, description="An existing version label.")
    percent: int = Field(ge=0, le=100, description="Percent of the routed calls it shadows.")


class TrafficDocument(BaseModel):
    """``traffic.json``: weighted routes between labels and an optional shadow label."""

    model_config = ConfigDict(extra="forbid", strict=True)

    routes: list[TrafficRoute] = Field(
        min_length=1,
        max_length=MAX_ROUTES,
        description="Distinct labels whose weights sum to 100.",
    )
    shadow: ShadowShare | None = None


class TrafficAnswer(BaseModel):
    """What the traffic routes answer: the document now (null: none, the served label)."""

    model_name: str
    traffic: TrafficDocument | None


class HistoryAnswer(BaseModel):
    """``GET .../history``: every change; with ``?at=`` the labels and traffic then instead."""

    model_name: str
    history: list[dict[str, Any]] | None = Field(
        None, description="Oldest first: kind (label, label-removed, traffic), at, by, ..."
    )
    at: str | None = None
    labels: dict[str, int] | None = Field(None, description="With ?at=: label -> version.")
    traffic: dict[str, Any] | None = Field(None, description="With ?at=: the document then.")


class LiveVersion(BaseModel):
    """One loaded version's live in-domain MSE against x² and its distance from the floor."""

    version: int
    live_mse_in_domain: float | None = Field(
        description="Over the version's last 1,000 answers (null before its first)."
    )
    floor: float | None = Field(description="(width / (num_neurons + 1))⁴ / 180.")
    floor_ratio: float | None = Field(description="live_mse_in_domain / floor.")


class LiveRoute(BaseModel):
    """One weighted route as the predictor sees it (ejected: it gets no more traffic)."""

    label: str
    version: int
    weight: int
    ejected: bool
    live_mse_in_domain: float | None


class LiveAnswer(BaseModel):
    """``GET .../live``: what the predictor at ``--predictor`` measures now."""

    model_name: str
    predictor: str | None = Field(
        description="The HOST:PORT asked (one replica answers); null: the trainer has no "
        "--predictor, and nothing is measured."
    )
    serving_version: int | None
    serving_label: str | None
    versions: list[LiveVersion]
    routes: list[LiveRoute]


class HistoryQuery(BaseModel):
    """``?at=``: answer the labels and the traffic as they were then."""

    at: str | None = Field(None, description="RFC 3339 time with an offset.")


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
    if not services().store.model_dir(model_name).is_dir():
        raise Problem(404, f"no model {model_name!r}", kind="not-found")
    return model_name


def _traffic_answer(model_name: str) -> Response:
    try:
        traffic = read_traffic(services().store, model_name)
    except StoreError as exc:
        raise Problem(503, str(exc), kind="store-unavailable") from exc
    document = traffic.to_document() if traffic else None
    return answer(TrafficAnswer.model_validate({"model_name": model_name, "traffic": document}))


@bp.put(
    TRAFFIC_PATH,
    operation_id="setTraffic",
    security=TOKEN,
    responses={200: TrafficAnswer, **refusals(400, 401, 403, 404, 413, 415, 422, 503)},
    # read by parse_traffic, the parser the predictors share, so its 422s name the same fields
    openapi_extensions={"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/TrafficDocument"}}}}},
)  # fmt: skip
def put_traffic(path: ModelPath) -> Response:
    """Split the calls that name no version between labels.

    Every predictor replica follows it within a poll; a call with gRPC metadata
    x-squarenet-session always lands on the same route.
    """
    model_name = _known_model(path.model_name)
    store = services().store
    try:
        traffic = parse_traffic(read_json_body(empty=None), store.read_labels(model_name))
    except TrafficError as exc:
        raise Problem.invalid(exc.field, exc.message) from exc
    change_traffic(store, model_name, traffic, by=who())
    return _traffic_answer(model_name)


@bp.get(
    TRAFFIC_PATH, operation_id="getTraffic", responses={200: TrafficAnswer, **refusals(404, 503)}
)
def get_traffic(path: ModelPath) -> Response:
    """The traffic document (null when calls follow each predictor's served label)."""
    return _traffic_answer(_known_model(path.model_name))


@bp.delete(
    TRAFFIC_PATH,
    operation_id="deleteTraffic",
    security=TOKEN,
    responses={200: TrafficAnswer, **refusals(401, 403, 404, 503)},
)
def delete_traffic(path: ModelPath) -> Response:
    """Remove the traffic document: back to the served label (404 when there is none)."""
    model_name = _known_model(path.model_name)
    store = services().store
    if read_traffic(store, model_name) is None:
        raise Problem(404, f"{model_name} has no traffic document", kind="not-found")
    change_traffic(store, model_name, None, by=who())
    return _traffic_answer(model_name)


@bp.get(
    HISTORY_PATH, operation_id="getHistory", responses={200: HistoryAnswer, **refusals(404, 422)}
)
def get_history(path: ModelPath, query: HistoryQuery) -> Response:
    """Every label move (with its gate report) and traffic change, oldest first.

    With ``at``, the labels and the traffic as they were at that moment instead.
    """
    model_name = _known_model(path.model_name)
    store = services().store
    if query.at is None:
        history = list(read_history(store, model_name))
        return answer(HistoryAnswer(model_name=model_name, history=history), exclude_unset=True)
    try:
        moment = parse_time(query.at)
    except ValueError as exc:
        message = f"must be an RFC 3339 time with an offset, e.g. 2026-01-02T03:04:05Z ({exc})"
        raise Problem.invalid("at", message) from exc
    then = HistoryAnswer(model_name=model_name, at=query.at, **state_at(store, model_name, moment))
    return answer(then, exclude_unset=True)


@bp.get(LIVE_PATH, operation_id="getLive", responses={200: LiveAnswer, **refusals(404, 503)})
def get_live(path: ModelPath) -> Response:
    """The live exact error the predictor measures, per version and route.

    Asks the predictor at --predictor (predictor null without it; 503 predictor-unavailable
    when it does not answer, 404 not-served when it serves another model).
    """
    model_name = _known_model(path.model_name)
    target = services().settings.predictor
    if target is None:  # nothing to ask: say so, with nothing measured
        return answer(LiveAnswer.model_validate(no_predictor(model_name)))
    try:
        figures = live_figures(services().store, model_name, target)
    except LiveUnavailable as exc:
        raise Problem(exc.status, exc.detail, kind=exc.kind) from exc
    return answer(LiveAnswer.model_validate(figures))
