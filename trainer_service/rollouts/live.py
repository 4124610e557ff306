"""The live exact error a predictor measures, joined with each version's floor.

Every predictor replica measures each answer against y = x² and reports, in ``GetModel``,
each loaded version's in-domain MSE over its last answers and each weighted route's figures.
The trainer asks the predictor at ``--predictor`` (on a cluster its Service: the figures are
then one replica's) and adds what only the store knows, each version's floor
(width / (num_neurons + 1))⁴ / 180, so the live error reads as a distance from the best a
network of that width can do.
"""

from __future__ import annotations

from typing import Any

from squarenet.cli.errors import CliError
from squarenet.cli.predictor_client import PredictorClient
from squarenet.store import ModelStore, StoreError
from trainer_service.rollouts.gate import floor_mse, num_neurons_of

#: Seconds the trainer waits for the predictor's GetModel: a dashboard view, not a job.
LIVE_TIMEOUT = 3.0
_ROUTE_FIELDS = ("version", "weight", "ejected", "live_mse_in_domain")


class LiveUnavailable(Exception):
    """The predictor could not say (503), or serves another model (404)."""

    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.kind, self.detail = status, kind, detail


def live_figures(store: ModelStore, model_name: str, target: str) -> dict[str, Any]:
    """The predictor's live figures for ``model_name``: per loaded version and per route."""
    try:
        with PredictorClient(target, timeout=LIVE_TIMEOUT) as client:
            model = client.get_model()
    except CliError as exc:
        raise LiveUnavailable(503, "predictor-unavailable", exc.message) from exc
    if model.model_name and model.model_name != model_name:
        raise LiveUnavailable(
            404,
            "not-served",
            f"the predictor at {target} serves {model.model_name!r}, not {model_name!r}",
        )
    metrics = dict(model.metrics)
    versions = []
    for version in model.loaded_versions:
        mse = metrics.get(f"version.{version}.live_mse_in_domain")
        floor = version_floor(store, model_name, int(version))
        versions.append(
            {
                "version": int(version),
                "live_mse_in_domain": mse,
                "floor": floor,
                "floor_ratio": mse / floor if mse is not None and floor else None,
            }
        )
    return {
        "model_name": model_name,
        "predictor": target,
        "serving_version": int(model.version),
        "serving_label": model.serving_label or None,
        "versions": versions,
        "routes": _routes(metrics),
    }


def no_predictor(model_name: str) -> dict[str, Any]:
    """The answer of a trainer started without ``--predictor``: no predictor, no figures."""
    return {
        "model_name": model_name,
        "predictor": None,
        "serving_version": None,
        "serving_label": None,
        "versions": [],
        "routes": [],
    }


def version_floor(store: ModelStore, model_name: str, version: int) -> float | None:
    """The floor of a version's width and domain (None when its metadata does not say)."""
    try:
        metadata = store.read_metadata(model_name, version)
    except (StoreError, OSError):
        return None
    neurons = num_neurons_of(metadata)
    if neurons is None:
        return None
    lo, hi = metadata["domain"]
    return floor_mse(float(hi) - float(lo), neurons)


def _routes(metrics: dict[str, float]) -> list[dict[str, Any]]:
    """``route.<label>.<field>`` figures as one entry per route, in the predictor's order."""
    routes: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        label, _, name = key.removeprefix("route.").rpartition(".")
        if key.startswith("route.") and label and name in _ROUTE_FIELDS:
            routes.setdefault(label, {"label": label, "live_mse_in_domain": None})[name] = value
    return [
        {
            **route,
            "version": int(route.get("version", 0)),
            "weight": int(route.get("weight", 0)),
            "ejected": bool(route.get("ejected", 0.0)),
        }
        for route in routes.values()
    ]
