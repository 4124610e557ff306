"""The sweeps' part of the trainer's OpenAPI document: response shapes and routes.

The request schema is ``SweepSpec`` itself; the responses are described by the models below,
which mirror ``views`` (the schemathesis runs check every answer against them).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from trainer_service.lifecycle import RunState, TrialState
from trainer_service.sweeps.records import SWEEP_ID_PATTERN, Promotion
from trainer_service.sweeps.spec import SweepPatch, SweepSpec, Value

REF = "#/components/schemas/{model}"


class ParameterAssignment(BaseModel):
    """One varied hyperparameter's value in a trial."""

    name: str
    value: Value


class MetricValue(BaseModel):
    """One metric of the best trial (null when the job did not report it)."""

    name: str
    value: float | None


class Observation(BaseModel):
    """What the best trial measured: the objective first."""

    metrics: list[MetricValue]


class OptimalTrial(BaseModel):
    """The succeeded trial with the best objective so far."""

    number: int
    jobId: str | None  # noqa: N815 - Katib's style
    modelVersion: int | None  # noqa: N815
    parameterAssignments: list[ParameterAssignment]  # noqa: N815
    observation: Observation


class Sweep(BaseModel):
    """A sweep: state, effective spec, trial counts and the current best trial."""

    id: str
    state: RunState
    message: str | None = Field(description="Why it ended FAILED, when it did.")
    modelName: str = Field(description="The model its trials publish under.")  # noqa: N815
    spec: SweepSpec
    createdAt: str  # noqa: N815
    startedAt: str | None  # noqa: N815
    finishedAt: str | None  # noqa: N815
    trials: int
    trialsPending: int  # noqa: N815
    trialsQueued: int  # noqa: N815
    trialsRunning: int  # noqa: N815
    trialsSucceeded: int  # noqa: N815
    trialsFailed: int  # noqa: N815
    trialsCancelled: int  # noqa: N815
    trialsEarlyStopped: int  # noqa: N815
    trialsSkipped: int  # noqa: N815
    currentOptimalTrial: OptimalTrial | None  # noqa: N815
    promotions: list[Promotion]


class SweepList(BaseModel):
    """The body of ``GET /v1/sweeps``: newest first."""

    sweeps: list[Sweep]


class TrialRow(BaseModel):
    """One trial: its job, state, assignments, metrics and the architecture's MSE limit."""

    number: int
    jobId: str | None  # noqa: N815
    state: TrialState
    parameterAssignments: list[ParameterAssignment]  # noqa: N815
    metrics: dict[str, float]
    objective: float | None
    mseLimit: float = Field(  # noqa: N815
        description="(mid_range / (num_neurons + 1))⁴ / 180: the best in-domain MSE possible."
    )
    modelVersion: int | None  # noqa: N815
    seconds: float | None = Field(description="The trial's job from start to end.")
    error: str | None
    reason: str | None = Field(description="Why it ended EARLY_STOPPED or SKIPPED.")
    startedAt: str | None  # noqa: N815
    finishedAt: str | None  # noqa: N815
    earlierJobIds: list[str] = Field(  # noqa: N815
        description="Jobs of earlier attempts, interrupted by a trainer restart."
    )


class TrialList(BaseModel):
    """The body of ``GET /v1/sweeps/{id}/trials``."""

    trials: list[TrialRow]


SCHEMA_MODELS: list[tuple[type[BaseModel], Any]] = [
    (SweepSpec, "validation"),
    (SweepPatch, "validation"),
    (Sweep, "serialization"),
    (SweepList, "serialization"),
    (TrialList, "serialization"),
    (Promotion, "serialization"),
]

OPERATION_IDS = {
    ("/v1/sweeps", "post"): "submitSweep",
    ("/v1/sweeps", "get"): "listSweeps",
    ("/v1/sweeps/{sweep_id}", "get"): "getSweep",
    ("/v1/sweeps/{sweep_id}", "delete"): "deleteSweep",
    ("/v1/sweeps/{sweep_id}", "patch"): "patchSweep",
    ("/v1/sweeps/{sweep_id}/trials", "get"): "listSweepTrials",
    ("/v1/sweeps/{sweep_id}/trials.csv", "get"): "getSweepTrialsCsv",
    ("/v1/sweeps/{sweep_id}/cancel", "post"): "cancelSweep",
    ("/v1/sweeps/{sweep_id}/promote", "post"): "promoteSweep",
    ("/v1/sweeps/{sweep_id}/events", "get"): "streamSweepEvents",
    ("/v1/sweeps/{sweep_id}/plots/{plot}.png", "get"): "getSweepPlot",
}

_SWEEP_ID = {
    "name": "sweep_id",
    "in": "path",
    "required": True,
    "description": "A sweep id as returned by POST /v1/sweeps.",
    "schema": {"type": "string", "pattern": SWEEP_ID_PATTERN.pattern},
}

_EXAMPLE = {
    "base": {"epochs": 200, "seed": 1},
    "parameters": [
        {"name": "num_neurons", "parameterType": "int", "feasibleSpace": {"list": [1, 2, 4]}},
        {
            "name": "mid_range",
            "parameterType": "double",
            "feasibleSpace": {"min": 2, "max": 102, "step": 50},
        },
    ],
    "algorithm": {"algorithmName": "grid"},
    "objective": {"type": "minimize", "objectiveMetricName": "mse_in_domain"},
    "parallelTrialCount": 2,
    "maxFailedTrialCount": 3,
}


def _body(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model)}}}


def _one(summary: str, answers: dict[str, Any]) -> dict[str, Any]:
    return {"summary": summary, "parameters": [_SWEEP_ID], "responses": answers}


def sweep_paths(problems: Any) -> dict[str, Any]:
    """The sweep routes; ``problems(*statuses)`` gives the shared problem answers."""
    sweep_ok = {"description": "The sweep.", "content": _body("Sweep")}
    return {
        "/v1/sweeps": {
            "post": {
                "summary": "Create a sweep: many training jobs from one Katib-style spec.",
                "description": "Every trial is planned now; a spec that cannot run is a 422 "
                "naming the field (a trial that breaks the job rules is `trials.<n>.<field>`). "
                "Requires a bearer token when SQUARENET_API_TOKEN is set.",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model="SweepSpec")},
                            "examples": {"article": {"summary": "A grid", "value": _EXAMPLE}},
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "Created; its trials are released as jobs.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": _body("Sweep"),
                    },
                    **problems(400, 401, 403, 413, 415, 422, 503),
                },
            },
            "get": {
                "summary": "Every sweep, newest first.",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "schema": {"$ref": REF.format(model="RunState")},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": 10_000},
                    },
                ],
                "responses": {
                    "200": {"description": "Sweeps.", "content": _body("SweepList")},
                    **problems(422),
                },
            },
        },
        "/v1/sweeps/{sweep_id}": {
            "get": _one("One sweep.", {"200": sweep_ok, **problems(404)}),
            "delete": _one(
                "Delete a finished sweep and its trials' model (never a promoted version).",
                {"204": {"description": "Deleted."}, **problems(401, 403, 404, 409)},
            ),
            "patch": {
                **_one(
                    "More trials or another parallelism; a succeeded sweep given more trials "
                    "continues where it stopped (only maxTrialCount and parallelTrialCount).",
                    {
                        "200": sweep_ok,
                        "202": {
                            "description": "Accepted; the controller applies it on its next pass.",
                            "content": _body("Sweep"),
                        },
                        **problems(400, 401, 403, 404, 409, 413, 415, 422, 503),
                    },
                ),
                "requestBody": {
                    "required": True,
                    "content": _body("SweepPatch"),
                },
            },
        },
        "/v1/sweeps/{sweep_id}/trials": {
            "get": _one(
                "Every trial with its job, state, assignments, metrics and MSE limit.",
                {"200": {"description": "Trials.", "content": _body("TrialList")}, **problems(404)},
            )
        },
        "/v1/sweeps/{sweep_id}/trials.csv": {
            "get": _one(
                "The trials table as CSV.",
                {
                    "200": {
                        "description": "CSV, one row per trial.",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    },
                    **problems(404),
                },
            )
        },
        "/v1/sweeps/{sweep_id}/cancel": {
            "post": _one(
                "Cancel a sweep: no more trials start, running ones are cancelled; answers "
                "at once: follow the sweep (GET or its events) to see it settle.",
                {
                    "200": {"description": "Every trial has ended.", "content": _body("Sweep")},
                    "202": {
                        "description": "Cancel recorded; running trials are still stopping.",
                        "content": _body("Sweep"),
                    },
                    **problems(401, 403, 404, 409),
                },
            )
        },
        "/v1/sweeps/{sweep_id}/promote": {
            "post": _one(
                "Publish the best trial's model as a new version of base.model_name.",
                {
                    "201": {"description": "Published.", "content": _body("Promotion")},
                    **problems(401, 403, 404, 409),
                },
            )
        },
        "/v1/sweeps/{sweep_id}/events": {
            "get": _one(
                "Server-sent events: `trial` per trial state change, then the final `state`.",
                {
                    "200": {
                        "description": "`event: trial` data TrialRow, then `event: state` "
                        "data Sweep.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **problems(404, 503),
                },
            )
        },
        "/v1/sweeps/{sweep_id}/plots/{plot}.png": {
            "get": {
                "summary": "A figure of the sweep: objective per parameter, fits, loss curves.",
                "parameters": [
                    _SWEEP_ID,
                    {
                        "name": "plot",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["objective", "fits", "loss"]},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "PNG image.",
                        "content": {
                            "image/png": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    **problems(404),
                },
            }
        },
    }
