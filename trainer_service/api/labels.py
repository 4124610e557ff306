"""Version labels over REST: ``PUT``/``DELETE /v1/models/{model_name}/labels/{label}``.

A label (``stable``, ``canary``) names one version of a model; predictors started with
``--serve-label`` serve that version by default, so promoting and rolling back are one call
each. The labels live in the store (``labels.json``, written atomically); these views only
translate HTTP to :meth:`ModelStore.set_label` / :meth:`ModelStore.remove_label`.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from squarenet.store import BrokenVersion, UnknownVersion, validate_label, validate_model_name
from trainer_service.api.openapi import LabelAnswer, LabelRequest
from trainer_service.api.problems import Problem
from trainer_service.api.views import read_json_body, services

bp = Blueprint("labels", __name__)
log = logging.getLogger("squarenet.trainer.labels")

LABEL_PATH = "/v1/models/<model_name>/labels/<label>"


def _checked(model_name: str, label: str) -> None:
    try:
        validate_model_name(model_name)
    except ValueError as exc:
        raise Problem(404, f"no model {model_name!r}", kind="not-found") from exc
    try:
        validate_label(label)
    except ValueError as exc:
        raise Problem(
            422, str(exc), kind="validation-error", errors=[{"field": "label", "message": str(exc)}]
        ) from exc


@bp.put(LABEL_PATH)
def set_label(model_name: str, label: str) -> Response:
    """Point ``label`` at a version (404 when the version is unknown or broken)."""
    _checked(model_name, label)
    body = LabelRequest.model_validate(read_json_body("the label's version", empty={}))
    store = services().store
    try:
        labels = store.set_label(model_name, label, body.version)
    except UnknownVersion as exc:
        raise Problem(404, str(exc), kind="not-found") from exc
    except BrokenVersion as exc:
        raise Problem(
            404, f"{model_name} version {body.version} is broken: {exc.reason}", kind="not-found"
        ) from exc
    log.info("label %s of model=%s now names version=%d", label, model_name, body.version)
    return jsonify(LabelAnswer(model_name=model_name, labels=labels).model_dump())


@bp.delete(LABEL_PATH)
def delete_label(model_name: str, label: str) -> Response:
    """Remove ``label`` (404 when the model has no such label)."""
    _checked(model_name, label)
    store = services().store
    if not store.remove_label(model_name, label):
        raise Problem(404, f"{model_name} has no label {label!r}", kind="not-found")
    log.info("label %s of model=%s removed", label, model_name)
    answer = LabelAnswer(model_name=model_name, labels=store.read_labels(model_name))
    return jsonify(answer.model_dump())
