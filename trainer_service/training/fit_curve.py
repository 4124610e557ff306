"""The fit picture as numbers (``fit.json``), so a browser can draw what ``fit.png`` shows.

Written by the job next to ``fit.png``: the published model's prediction and x² over twice
the training domain, and a sample of the training rows. The dashboard draws it with the
domain shaded and the extrapolation error between the two curves filled in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer_service.training.data import TrainingData, target

if TYPE_CHECKING:  # export imports TensorFlow; the web app reads FIT_DATA from here
    from trainer_service.training.export import Predict

FIT_DATA = "fit.json"
CURVE_POINTS = 401
"""Points of the curves: the kinks of a 10-unit network stay sharp at any screen width."""
DATA_POINTS_SHOWN = 500
"""Training rows sent: enough to show the sampling, small enough for a quick page."""


def fit_curve(
    predict: Predict, data: TrainingData, domain: tuple[float, float], rng: np.random.Generator
) -> dict[str, Any]:
    """x², the prediction over [lo - reach/2, hi + reach/2] and a sample of training rows."""
    lo, hi = domain
    reach = hi - lo
    x = np.linspace(lo - reach / 2, hi + reach / 2, CURVE_POINTS)
    prediction = predict(x)
    shown = min(DATA_POINTS_SHOWN, len(data.x_train))
    rows = np.sort(rng.choice(len(data.x_train), size=shown, replace=False))
    outside = (x < lo) | (x > hi)
    error = np.abs(prediction - target(x))
    worst = int(np.argmax(np.where(outside, error, -1.0)))
    return {
        "domain": [lo, hi],
        "x": _floats(x),
        "target": _floats(target(x)),
        "prediction": _floats(prediction),
        "data": {"x": _floats(data.x_train[rows, 0]), "y": _floats(data.y_train[rows, 0])},
        "max_extrapolation_error": {"x": float(x[worst]), "error": float(error[worst])},
    }


def write_fit_curve(curve: dict[str, Any], path: Path) -> None:
    """Write the curve as compact JSON (the job's artifact folder is its own)."""
    path.write_text(json.dumps(curve, separators=(",", ":"), allow_nan=False), encoding="utf-8")


def _floats(values: Any) -> list[float]:
    """Plain floats rounded to 6 significant digits: a third of the bytes, no visible change."""
    return [float(f"{value:.6g}") for value in np.asarray(values, dtype=np.float64).reshape(-1)]
