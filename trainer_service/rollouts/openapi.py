"""The rollout routes' part of the trainer's OpenAPI document: traffic and history."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from squarenet.rollouts import MAX_ROUTES
from squarenet.store import LABEL_PATTERN, MODEL_NAME_PATTERN

REF = "#/components/schemas/{model}"


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


SCHEMA_MODELS: list[tuple[type[BaseModel], Any]] = [
    (TrafficDocument, "validation"),
    (TrafficAnswer, "serialization"),
    (HistoryAnswer, "serialization"),
    (LiveAnswer, "serialization"),
]

OPERATION_IDS = {
    ("/v1/models/{model_name}/traffic", "put"): "setTraffic",
    ("/v1/models/{model_name}/traffic", "get"): "getTraffic",
    ("/v1/models/{model_name}/traffic", "delete"): "deleteTraffic",
    ("/v1/models/{model_name}/history", "get"): "getHistory",
    ("/v1/models/{model_name}/live", "get"): "getLive",
}

_MODEL = {
    "name": "model_name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN.pattern},
}


def _body(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model)}}}


def rollout_paths(problems: Any) -> dict[str, Any]:
    """The traffic and history routes; ``problems(*statuses)`` gives the problem answers."""
    answer = {"description": "The traffic document now.", "content": _body("TrafficAnswer")}
    return {
        "/v1/models/{model_name}/traffic": {
            "put": {
                "summary": "Split the calls that name no version between labels.",
                "description": "Every predictor replica follows it within a poll; a call "
                "with gRPC metadata x-squarenet-session always lands on the same route.",
                "parameters": [_MODEL],
                "requestBody": {"required": True, "content": _body("TrafficDocument")},
                "responses": {"200": answer, **problems(400, 401, 403, 404, 413, 415, 422, 503)},
            },
            "get": {
                "summary": "The traffic document (null when calls follow the served label).",
                "parameters": [_MODEL],
                "responses": {"200": answer, **problems(404, 503)},
            },
            "delete": {
                "summary": "Remove the traffic document: back to the served label.",
                "parameters": [_MODEL],
                "responses": {"200": answer, **problems(401, 403, 404, 503)},
            },
        },
        "/v1/models/{model_name}/history": {
            "get": {
                "summary": "Every label move (with its gate report) and traffic change.",
                "parameters": [
                    _MODEL,
                    {
                        "name": "at",
                        "in": "query",
                        "required": False,
                        "description": "RFC 3339 time: answer the labels and traffic then.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {"description": "History.", "content": _body("HistoryAnswer")},
                    **problems(404, 422),
                },
            }
        },
        "/v1/models/{model_name}/live": {
            "get": {
                "summary": "The live exact error the predictor measures, per version and route.",
                "description": "Asks the predictor at --predictor (predictor null without "
                "it; 503 predictor-unavailable when it does not answer, 404 not-served when "
                "it serves another model).",
                "parameters": [_MODEL],
                "responses": {
                    "200": {"description": "Live figures.", "content": _body("LiveAnswer")},
                    **problems(404, 503),
                },
            }
        },
    }
