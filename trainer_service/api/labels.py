"""Version labels over REST: ``PUT``/``DELETE /v1/models/{model_name}/labels/{label}``.

A label (``stable``, ``canary``) names one version of a model; predictors started with
``--serve-label`` serve that version by default, so promoting and rolling back are one call
each. The labels live in the store (``labels.json``, written atomically). A move runs the
version's promotion gate first (``trainer_service.rollouts``): a failing gate answers 409
with the report unless the body says ``"force": true``; every move enters the history.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response
from flask_openapi3.blueprint import APIBlueprint
from pydantic import BaseModel, ConfigDict, Field, field_validator

from squarenet.store import LABEL_PATTERN, BrokenVersion, UnknownVersion, validate_label
from trainer_service.api.http import TOKEN, answer, refusals
from trainer_service.api.models import ModelPath
from trainer_service.api.problems import Problem
from trainer_service.api.services import services
from trainer_service.api.traffic import GateProblem, thresholds, who
from trainer_service.rollouts.moves import GateRefused, move_label, remove_label

bp = APIBlueprint("labels", __name__)
log = logging.getLogger("squarenet.trainer.labels")

LABEL_PATH = "/v1/models/<model_name>/labels/<label>"


class LabelPath(ModelPath):
    """A model's label (e.g. stable, canary)."""

    label: str = Field(
        description="e.g. stable, canary", json_schema_extra={"pattern": LABEL_PATTERN.pattern}
    )

    @field_validator("label")
    @classmethod
    def _a_label(cls, label: str) -> str:
        """A 422 naming ``label`` (raised as a Problem: the path's own message, as is)."""
        try:
            return validate_label(label)
        except ValueError as exc:
            raise Problem.invalid("label", str(exc), detail=str(exc)) from exc


class LabelRequest(BaseModel):
    """The body of ``PUT .../labels/{label}``: the version the label names from now on."""

    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, le=10**18 - 1, description="A published, unbroken version.")
    force: bool = Field(
        False, description="Move the label even when the version fails its promotion gate."
    )


class LabelAnswer(BaseModel):
    """The model's labels after the change (PUT: and the version's gate report)."""

    model_name: str
    labels: dict[str, int] = Field(description="Every label of the model and its version.")
    gate: dict[str, Any] | None = Field(
        None, description="PUT: the version's gate report (checks, values, limits, passed)."
    )


@bp.put(
    LABEL_PATH,
    operation_id="setLabel",
    security=TOKEN,
    responses={200: LabelAnswer, **refusals(400, 401, 403, 404, 409, 413, 415, 422, 503)},
)
def set_label(path: LabelPath, body: LabelRequest) -> Response:
    """Point a version label at a published, unbroken version.

    Predictors started with --serve-label serve the label's version by default: promote and
    roll back by moving the label (404 when the version is unknown or broken).
    """
    model_name, label = path.model_name, path.label
    try:
        labels, report = move_label(
            services().store,
            model_name,
            label,
            body.version,
            force=body.force,
            thresholds=thresholds(),
            by=who(),
        )
    except GateRefused as exc:
        raise GateProblem(str(exc), exc.report) from exc
    except UnknownVersion as exc:
        raise Problem(404, str(exc), kind="not-found") from exc
    except BrokenVersion as exc:
        raise Problem(
            404, f"{model_name} version {body.version} is broken: {exc.reason}", kind="not-found"
        ) from exc
    return answer(LabelAnswer(model_name=model_name, labels=labels, gate=report))


@bp.delete(
    LABEL_PATH,
    operation_id="deleteLabel",
    security=TOKEN,
    responses={200: LabelAnswer, **refusals(401, 403, 404, 422, 503)},
)
def delete_label(path: LabelPath) -> Response:
    """Remove a version label (404 when the model has no such label)."""
    store = services().store
    if not remove_label(store, path.model_name, path.label, by=who()):
        raise Problem(404, f"{path.model_name} has no label {path.label!r}", kind="not-found")
    log.info("label %s of model=%s removed", path.label, path.model_name)
    labels = store.read_labels(path.model_name)
    return answer(LabelAnswer(model_name=path.model_name, labels=labels), exclude_none=True)
