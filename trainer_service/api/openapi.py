"""The OpenAPI 3.1 document of the trainer, generated from the models the views use.

Request and response schemas come from the same pydantic models that validate and
serialise (``TrainingParams``, ``Job``, ``JobList``, ``ModelList``), so the document cannot
drift from the behaviour; only the list of routes and answers is written here.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from squarenet.store import LABEL_PATTERN, MODEL_NAME_PATTERN
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.rollouts import openapi as rollouts_openapi
from trainer_service.runner.book import Job
from trainer_service.runner.records import JOB_ID_PATTERN
from trainer_service.settings import MAX_BODY_BYTES
from trainer_service.sweeps import openapi as sweeps_openapi

REF = "#/components/schemas/{model}"


class JobList(BaseModel):
    """The body of ``GET /v1/jobs``: every job, newest first."""

    model_config = ConfigDict(frozen=True)

    jobs: list[Job]


MAX_LIST_LIMIT = 10_000


class JobQuery(BaseModel):
    """Optional filters of ``GET /v1/jobs`` (query string); other parameters are ignored."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: RunState | None = Field(None, description="Only jobs in this state.")
    limit: int | None = Field(
        None, ge=1, le=MAX_LIST_LIMIT, description="At most this many jobs, newest first."
    )
    sweep: str | None = Field(None, description="Only the trials of this sweep.")


class ModelEntry(BaseModel):
    """One numbered version in the store; ``broken`` when its files fail verification."""

    model_name: str
    version: int
    status: Literal["ok", "broken"]
    reason: str | None = Field(description="Why the version is broken (null when ok).")
    metadata: dict[str, Any] | None = Field(
        description="metadata.json of the version (null when broken)."
    )
    labels: list[str] = Field(description="The version labels naming this version.")
    gate: dict[str, Any] | None = Field(
        None,
        description="The version's promotion gate: the last report of a label move to it, "
        "else its measurement alone (null when it has none yet).",
    )


class ModelList(BaseModel):
    """The body of ``GET /v1/models``: per model, newest version first, and each model's labels."""

    models: list[ModelEntry]
    labels: dict[str, dict[str, int]] = Field(
        description="Per model name, its version labels and the version each names."
    )


class LabelRequest(BaseModel):
    """The body of ``PUT .../labels/{label}``: the version the label names from now on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, le=10**18 - 1, description="A published, unbroken version.")
    force: bool = Field(
        False, description="Move the label even when the version fails its promotion gate."
    )


class LabelAnswer(BaseModel):
    """What ``PUT`` and ``DELETE`` answer: the model's labels after the change."""

    model_name: str
    labels: dict[str, int] = Field(description="Every label of the model and its version.")
    gate: dict[str, Any] | None = Field(
        None, description="PUT: the version's gate report (checks, values, limits, passed)."
    )


class FieldError(BaseModel):
    """One rejected field of a 422."""

    field: str = Field(description="Dotted path of the field; 'body' for the body itself.")
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    errors: list[FieldError] | None = Field(
        None, description="Present on 422: every rejected field."
    )


_PROBLEM = {"application/problem+json": {"schema": {"$ref": REF.format(model="ProblemDetails")}}}


def _json_body(model: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model)}}}


def _problems(*statuses: int) -> dict[str, Any]:
    reasons = {
        400: "Malformed JSON.",
        401: "Missing or wrong bearer token (only when SQUARENET_API_TOKEN is set).",
        403: "A browser sent it for a page of another origin (`Sec-Fetch-Site` or `Origin`): "
        "`cross-site-request`.",
        404: "No such job, sweep or plot (or fit curve yet); for labels: no such model, "
        "version (or a broken one), or label.",
        409: "The job or sweep has already finished (cancel); the sweep has not finished "
        "(delete); no trial of the sweep succeeded (promote); for labels: the version fails "
        'its promotion gate (`gate` holds the report; send "force": true to move it anyway).',
        413: f"Body larger than {MAX_BODY_BYTES} bytes.",
        415: "Body is not application/json.",
        422: "For labels: the label is not [a-z][a-z0-9-]{0,31} or the body is not "
        '{"version": N}. For jobs: a field is unknown, of the wrong type or out of range, '
        "or breaks a rule that "
        "joins fields (batch_size at most the training rows; batch_size × num_neurons at most "
        "2^24; n_samples leaving at least one "
        "validation row; early_stopping_patience needs validation_split > 0); each rejected "
        "field is named in `errors`.",
        429: "The job queue is full; retry after `Retry-After` seconds.",
        503: "The model store is unavailable (for /readyz: not writable, or the job runner "
        "is gone; for an event stream: the worker holds as many streams as it may), or the "
        "cluster refused the kubernetes executor's call (`executor-unavailable`); retry after "
        "`Retry-After` seconds.",
    }
    answers: dict[str, Any] = {}
    for status in statuses:
        answer: dict[str, Any] = {"description": reasons[status], "content": _PROBLEM}
        if status in (429, 503):
            answer["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        if status == 401:
            answer["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        answers[str(status)] = answer
    return answers


# OpenAPI before 3.2: the schema of an event-stream media type describes each event
_SSE_EVENT = {
    "type": "object",
    "properties": {
        "event": {"enum": ["epoch", "state"]},
        "data": {
            "type": "string",
            "description": "JSON: {epoch, epochs, loss, val_loss} for `epoch`, the Job for `state`.",
        },
        "id": {"type": "string", "description": "The epoch number (epoch events only)."},
    },
    "required": ["event", "data"],
}

_NUMBERS = {"type": "array", "items": {"type": "number"}}
_EPOCHS = {
    "type": "object",
    "properties": {
        "job_id": {"type": "string"},
        "epochs": {"type": "integer", "description": "Epochs planned."},
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "epoch": {"type": "integer"},
                    "loss": {"type": ["number", "null"]},
                    "val_loss": {"type": ["number", "null"]},
                },
                "required": ["epoch", "loss", "val_loss"],
            },
        },
    },
    "required": ["job_id", "epochs", "history"],
}
_FIT = {
    "type": "object",
    "properties": {
        "job_id": {"type": "string"},
        "model_version": {"type": ["integer", "null"]},
        "domain": {**_NUMBERS, "minItems": 2, "maxItems": 2},
        "x": _NUMBERS,
        "target": {**_NUMBERS, "description": "x² at each x."},
        "prediction": {**_NUMBERS, "description": "The published model at each x."},
        "data": {
            "type": "object",
            "properties": {"x": _NUMBERS, "y": _NUMBERS},
            "required": ["x", "y"],
            "description": "A sample of the training rows.",
        },
        "max_extrapolation_error": {
            "type": "object",
            "properties": {"x": {"type": "number"}, "error": {"type": "number"}},
            "required": ["x", "error"],
        },
    },
    "required": ["job_id", "model_version", "domain", "x", "target", "prediction", "data"],
}


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "description": "A job id as returned by POST /v1/jobs.",
    "schema": {"type": "string", "pattern": JOB_ID_PATTERN.pattern},
}


def _job(summary: str, answers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "parameters": [_JOB_ID], "responses": answers, **extra}


def _paths() -> dict[str, Any]:
    job_ok = {"description": "The job.", "content": _json_body("Job")}
    return {
        "/v1/jobs": {
            "post": {
                "summary": "Queue a training job.",
                "description": "Every field is optional; an empty body means every default. "
                "Requires a bearer token when SQUARENET_API_TOKEN is set.",
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model="TrainingParams")},
                            "examples": {
                                "defaults": {"summary": "The article's settings", "value": {}},
                                "small": {
                                    "summary": "A quick job",
                                    "value": {
                                        "n_samples": 2000,
                                        "epochs": 50,
                                        "batch_size": 100,
                                        "seed": 1,
                                    },
                                },
                            },
                        }
                    },
                },
                "responses": {
                    "202": {
                        "description": "Queued.",
                        "headers": {"Location": {"schema": {"type": "string"}}},
                        "content": _json_body("Job"),
                    },
                    **_problems(400, 401, 403, 413, 415, 422, 429, 503),
                },
            },
            "get": {
                "summary": "Every job, newest first.",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "required": False,
                        "description": "Only jobs in this state.",
                        "schema": {"$ref": REF.format(model="RunState")},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "description": "At most this many jobs, newest first.",
                        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                    },
                    {
                        "name": "sweep",
                        "in": "query",
                        "required": False,
                        "description": "Only the trials of this sweep.",
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": {"description": "Jobs.", "content": _json_body("JobList")},
                    **_problems(422),
                },
            },
        },
        "/v1/jobs/{job_id}": {"get": _job("One job.", {"200": job_ok, **_problems(404)})},
        "/v1/jobs/{job_id}/cancel": {
            "post": _job(
                "Cancel a job (stops its training process); answers at once, without waiting "
                "for the runner: follow the job (GET or its events) to see it end.",
                {
                    "200": {
                        "description": "CANCELLED (a queued job ends at once).",
                        "content": _json_body("Job"),
                    },
                    "202": {
                        "description": "Cancel recorded; the job as it is while its runner "
                        "stops it (it ends CANCELLED).",
                        "content": _json_body("Job"),
                    },
                    **_problems(401, 403, 404, 409),
                },
            )
        },
        "/v1/jobs/{job_id}/events": {
            "get": _job(
                "Server-sent events: `epoch` per finished epoch, then the final `state`.",
                {
                    "200": {
                        "description": "`event: epoch` data {epoch, epochs, loss, val_loss} "
                        "(id = epoch; Last-Event-ID resumes), then `event: state` data Job.",
                        "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                    },
                    **_problems(404, 503),
                },
            )
        },
        "/v1/jobs/{job_id}/plots/{plot}.png": {
            "get": {
                "summary": "A figure of the job: loss per epoch, or the fit in and out of domain.",
                "parameters": [
                    _JOB_ID,
                    {
                        "name": "plot",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["loss", "fit"]},
                    },
                ],
                "responses": {
                    "200": {
                        "description": "PNG image.",
                        "content": {
                            "image/png": {"schema": {"type": "string", "format": "binary"}}
                        },
                    },
                    **_problems(404),
                },
            }
        },
        "/v1/jobs/{job_id}/epochs": {
            "get": _job(
                "The job's loss and val_loss per finished epoch (what the event stream replays).",
                {
                    "200": {"description": "Epoch history.", "content": _json_schema(_EPOCHS)},
                    **_problems(404),
                },
            )
        },
        "/v1/jobs/{job_id}/fit": {
            "get": _job(
                "The fit curve of fit.png as numbers: x², the prediction over twice the "
                "domain, a sample of training rows.",
                {
                    "200": {"description": "Fit curve.", "content": _json_schema(_FIT)},
                    **_problems(404),
                },
            )
        },
        "/v1/models": {
            "get": {
                "summary": "Every published version of every model (broken ones marked).",
                "responses": {
                    "200": {"description": "Models.", "content": _json_body("ModelList")}
                },
            }
        },
        "/v1/models/{model_name}/labels/{label}": _label_operations(),
        **rollouts_openapi.rollout_paths(_problems),
        **sweeps_openapi.sweep_paths(_problems),
        "/": {
            "get": {
                "summary": "The dashboard (HTML); each view is a hash route of this page.",
                "responses": {
                    "200": {
                        "description": "The page.",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/healthz": {"get": {"summary": "Liveness.", "responses": {"200": _status_ok()}}},
        "/readyz": {
            "get": {
                "summary": "Readiness: store writable, job runner alive.",
                "responses": {"200": _status_ok(), **_problems(503)},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus text format.",
                "responses": {
                    "200": {
                        "description": "Metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document.",
                "responses": {
                    "200": {
                        "description": "OpenAPI 3.1.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    }
                },
            }
        },
    }


def _label_operations() -> dict[str, Any]:
    parameters = [
        {
            "name": "model_name",
            "in": "path",
            "required": True,
            "schema": {"type": "string", "pattern": MODEL_NAME_PATTERN.pattern},
        },
        {
            "name": "label",
            "in": "path",
            "required": True,
            "description": "e.g. stable, canary",
            "schema": {"type": "string", "pattern": LABEL_PATTERN.pattern},
        },
    ]
    answer = {"description": "The model's labels now.", "content": _json_body("LabelAnswer")}
    return {
        "put": {
            "summary": "Point a version label at a published, unbroken version.",
            "description": "Predictors started with --serve-label serve the label's version "
            "by default: promote and roll back by moving the label.",
            "parameters": parameters,
            "requestBody": {"required": True, "content": _json_body("LabelRequest")},
            "responses": {"200": answer, **_problems(400, 401, 403, 404, 409, 413, 415, 422, 503)},
        },
        "delete": {
            "summary": "Remove a version label.",
            "parameters": parameters,
            "responses": {"200": answer, **_problems(401, 403, 404, 422, 503)},
        },
    }


def _status_ok() -> dict[str, Any]:
    return {
        "description": "OK.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"status": {"type": "string"}},
                    "required": ["status"],
                }
            }
        },
    }


OPERATION_IDS = {
    ("/v1/jobs", "post"): "submitJob",
    ("/v1/jobs", "get"): "listJobs",
    ("/v1/jobs/{job_id}", "get"): "getJob",
    ("/v1/jobs/{job_id}/cancel", "post"): "cancelJob",
    ("/v1/jobs/{job_id}/events", "get"): "streamJobEvents",
    ("/v1/jobs/{job_id}/plots/{plot}.png", "get"): "getJobPlot",
    ("/v1/jobs/{job_id}/epochs", "get"): "getJobEpochs",
    ("/v1/jobs/{job_id}/fit", "get"): "getJobFit",
    ("/v1/models", "get"): "listModels",
    ("/v1/models/{model_name}/labels/{label}", "put"): "setLabel",
    ("/v1/models/{model_name}/labels/{label}", "delete"): "deleteLabel",
    ("/", "get"): "dashboard",
    ("/healthz", "get"): "healthz",
    ("/readyz", "get"): "readyz",
    ("/metrics", "get"): "metrics",
    ("/openapi.json", "get"): "openapi",
    **sweeps_openapi.OPERATION_IDS,
    **rollouts_openapi.OPERATION_IDS,
}


def _finish_operations(paths: dict[str, Any]) -> dict[str, Any]:
    """Name every operation; POST and DELETE take the bearer token (only when one is set)."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            operation["operationId"] = OPERATION_IDS[(path, method)]
            if method in ("post", "put", "delete"):
                operation["security"] = [{"bearer": []}, {}]
    return paths


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once per process)."""
    _, schemas = models_json_schema(
        [
            (TrainingParams, "validation"),
            (Job, "serialization"),
            (JobList, "serialization"),
            (ModelList, "serialization"),
            (LabelRequest, "validation"),
            (LabelAnswer, "serialization"),
            (ProblemDetails, "serialization"),
            *sweeps_openapi.SCHEMA_MODELS,
            *rollouts_openapi.SCHEMA_MODELS,
        ],
        ref_template=REF,
    )
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "squarenet trainer",
            "version": "1",
            "description": "Train a 1-hidden-layer ReLU network on y = x² and publish it "
            "to the model store. Reads are open; POST, PUT and DELETE need a bearer token when "
            "SQUARENET_API_TOKEN is set.",
        },
        "paths": _finish_operations(_paths()),
        "components": {
            "schemas": schemas["$defs"],
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
