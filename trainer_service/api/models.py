"""``GET /v1/models``: every published version of every model, its labels and its gate."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response
from flask_openapi3.blueprint import APIBlueprint
from pydantic import BaseModel, Field, field_validator

from squarenet.store import (
    MODEL_NAME_PATTERN,
    BrokenVersion,
    ModelStore,
    StoreError,
    validate_model_name,
)
from trainer_service.api.http import answer
from trainer_service.api.problems import Problem
from trainer_service.api.services import services
from trainer_service.rollouts.gate import measured_versions
from trainer_service.rollouts.moves import gate_reports, version_gate

bp = APIBlueprint("models", __name__)


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
    """Per model, newest version first, and each model's labels."""

    models: list[ModelEntry]
    labels: dict[str, dict[str, int]] = Field(
        description="Per model name, its version labels and the version each names."
    )


def model_labels(store: ModelStore, model_name: str) -> dict[str, int]:
    """A model's version labels; {} when labels.json is malformed (as the predictor reads it)."""
    try:
        return store.read_labels(model_name)
    except StoreError:
        return {}


def model_entries(store: ModelStore, name: str, labels: dict[str, int]) -> list[ModelEntry]:
    """Every numbered version of one model, newest first; broken ones say why."""
    named: dict[int, list[str]] = {}
    for label, labelled in sorted(labels.items()):
        named.setdefault(labelled, []).append(label)
    reports, kept = gate_reports(store, name), measured_versions(store, name)
    entries = []
    for version in reversed(store.list_versions(name)):
        try:
            found = store.verify_version(name, version)
        except BrokenVersion as exc:
            entries.append(
                ModelEntry(model_name=name, version=version, status="broken", reason=exc.reason,
                           metadata=None, labels=named.get(version, []))
            )  # fmt: skip
            continue
        entries.append(
            ModelEntry(model_name=name, version=version, status="ok", reason=None,
                       metadata=dict(found.metadata), labels=named.get(version, []),
                       gate=version_gate(store, found, reports, kept))
        )  # fmt: skip
    return entries


@bp.get("/v1/models", operation_id="listModels", responses={200: ModelList})
def list_models() -> Response:
    """Every published version of every model (broken ones marked)."""
    store = services().store
    labels = {name: model_labels(store, name) for name in store.model_names()}
    entries = [entry for name in labels for entry in model_entries(store, name, labels[name])]
    return answer(ModelList(models=entries, labels=labels))


class ModelPath(BaseModel):
    """The model a route is about; a name that cannot be a model is simply not found (404)."""

    model_name: str = Field(json_schema_extra={"pattern": MODEL_NAME_PATTERN.pattern})

    @field_validator("model_name")
    @classmethod
    def _a_model_name(cls, name: str) -> str:
        """Raises the 404 itself: a Problem is no ValueError, so pydantic lets it through."""
        try:
            return validate_model_name(name)
        except ValueError as exc:
            raise Problem(404, f"no model {name!r}", kind="not-found") from exc
