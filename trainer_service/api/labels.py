"""Version labels over REST: ``PUT``/``DELETE /v1/models/{model_name}/labels/{label}``.

A label (``stable``, ``canary``) names one version of a model; predictors started with
``--serve-label`` serve that version by default, so promoting and rolling back are one call
each. The labels live in the store (``labels.json``, written atomically). A move runs the
version's promotion gate first (``trainer_service.rollouts``): a failing gate answers 409
with the report unless the body says ``"force": true``; every move enters the history.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify

from squarenet.store import BrokenVersion, UnknownVersion, validate_label, validate_model_name
from trainer_service.api.openapi import LabelAnswer, LabelRequest
from trainer_service.api.problems import Problem
from trainer_service.api.traffic import GateProblem, thresholds, who
from trainer_service.api.views import read_json_body, services
from trainer_service.rollouts.moves import GateRefused, move_label, remove_label

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
        raise Problem.invalid("label", str(exc), detail=str(exc)) from exc


@bp.put(LABEL_PATH)
def set_label(model_name: str, label: str) -> Response:
    """Point ``label`` at a version (404 when the version is unknown or broken)."""
    _checked(model_name, label)
    body = LabelRequest.model_validate(read_json_body("the label's version", empty={}))
    store = services().store
    try:
        labels, report = move_label(
            store,
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
    return jsonify(LabelAnswer(model_name=model_name, labels=labels, gate=report).model_dump())


@bp.delete(LABEL_PATH)
def delete_label(model_name: str, label: str) -> Response:
    """Remove ``label`` (404 when the model has no such label)."""
    _checked(model_name, label)
    store = services().store
    if not remove_label(store, model_name, label, by=who()):
        raise Problem(404, f"{model_name} has no label {label!r}", kind="not-found")
    log.info("label %s of model=%s removed", label, model_name)
    answer = LabelAnswer(model_name=model_name, labels=store.read_labels(model_name))
    return jsonify(answer.model_dump(exclude_none=True))
