"""Promotion gates: judge a version against the exact target before a label moves to it.

y = x² is known everywhere, so a version is measured exactly: its in-domain MSE on a dense
grid, that MSE over the floor of its width and domain (``(w / (n + 1))⁴ / 180``, the best a
one-hidden-layer ReLU network of ``n`` units can do on width ``w``), and how closely
``model.tflite`` (what predictors run) follows the SavedModel (what TensorFlow Serving runs).
This *measurement* depends on the version only: the job that publishes it seals it in as
``gate.json`` (TensorFlow is loaded there already); else the trainer makes it on first use
(the SavedModel side in a child process, so that no gunicorn worker imports TensorFlow) and
keeps it in ``<model>/.gates/<version>.json``. Not being worse than the version holding the
label is judged at every move, with LiteRT alone, in milliseconds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import numpy.typing as npt

from squarenet.store import TFLITE_FILE, ModelStore, ModelVersion, write_json_atomic

GATE_FILE = "gate.json"
GATES_DIR = ".gates"
GRID_POINTS = 10_001
MEASUREMENT_FORMAT = 1
#: A child process imports TensorFlow (seconds) and loads one SavedModel.
_CHILD_TIMEOUT = 300.0

SavedPredict = Callable[[npt.ArrayLike], npt.NDArray[np.float64]]


@dataclass(frozen=True)
class Thresholds:
    """What a version must meet (trainer settings ``gate_*``)."""

    max_floor_ratio: float
    agreement_tolerance: float
    max_regression: float


def floor_mse(width: float, num_neurons: int) -> float:
    """The best in-domain MSE a width-``num_neurons`` ReLU network can reach on ``width``."""
    return (width / (num_neurons + 1)) ** 4 / 180


def grid(lo: float, hi: float, points: int = GRID_POINTS) -> npt.NDArray[np.float32]:
    """``points`` evenly spaced x over [lo, hi], as the float32 the models compute in."""
    return np.linspace(lo, hi, points, dtype=np.float64).astype(np.float32)


def tflite_predict(path: Path, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """``model.tflite`` on every x at once with LiteRT (raises ValueError if it cannot run)."""
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (only the gate needs it)

    try:
        interpreter = Interpreter(model_path=str(path))
        (given,) = interpreter.get_input_details()
        (taken,) = interpreter.get_output_details()
        interpreter.resize_tensor_input(given["index"], [len(x), 1])
        interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], x.reshape(-1, 1))
        interpreter.invoke()
        y = interpreter.get_tensor(taken["index"])
    except (RuntimeError, ValueError, OSError) as exc:
        raise ValueError(f"{TFLITE_FILE} does not run: {exc}") from exc
    return np.asarray(y, dtype=np.float64).reshape(-1)


def _mse(y: npt.NDArray[np.float64], x: npt.NDArray[np.float32]) -> float:
    return float(np.mean(np.square(y - np.square(x.astype(np.float64)))))


def measure(
    folder: Path, domain: tuple[float, float], num_neurons: int | None, saved_predict: SavedPredict
) -> dict[str, Any]:
    """The version-only part of the gate, for ``folder`` (published or still staging)."""
    started = time.perf_counter()
    lo, hi = domain
    x = grid(lo, hi)
    y = tflite_predict(folder / TFLITE_FILE, x)
    saved = saved_predict(x)
    mse = _mse(y, x)
    floor = floor_mse(hi - lo, num_neurons) if num_neurons else None
    return {
        "format": MEASUREMENT_FORMAT,
        "grid_points": len(x),
        "domain": [lo, hi],
        "num_neurons": num_neurons,
        "mse_in_domain": mse,
        "floor": floor,
        "floor_ratio": mse / floor if floor else None,
        "max_abs_difference": float(np.max(np.abs(y - saved))),
        "scale": float(np.max(np.abs(saved))),
        "seconds": time.perf_counter() - started,
    }


def write_measurement(
    folder: Path, domain: tuple[float, float], num_neurons: int, saved_predict: SavedPredict
) -> None:
    """Measure a staging folder and write its ``gate.json`` (the job calls this to publish)."""
    write_json_atomic(folder / GATE_FILE, measure(folder, domain, num_neurons, saved_predict))


def num_neurons_of(metadata: Mapping[str, Any]) -> int | None:
    """The hidden layer's width a version's metadata gives (None when it does not say)."""
    params = metadata.get("params")
    value = params.get("num_neurons") if isinstance(params, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def kept_measurement(
    store: ModelStore, version: ModelVersion, *, kept: set[int] | None = None
) -> dict[str, Any] | None:
    """The version's sealed ``gate.json``, else the one the trainer kept; None when neither.

    The sealed one is checked with the version's files and parsed once while they hold;
    ``kept`` (``measured_versions``) spares a listing of many versions a look each.
    """
    found = version.sealed_json(GATE_FILE)
    if not _is_measurement(found) and (kept is None or version.version in kept):
        path = store.model_dir(version.model_name) / GATES_DIR / f"{version.version}.json"
        try:
            found = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    return found if _is_measurement(found) else None


def measured_versions(store: ModelStore, model_name: str) -> set[int]:
    """Versions whose measurement the trainer kept (one listing instead of a look per version)."""
    try:
        names = os.listdir(store.model_dir(model_name) / GATES_DIR)
    except OSError:
        return set()
    return {int(name[:-5]) for name in names if name.endswith(".json") and name[:-5].isdigit()}


def _is_measurement(found: Any) -> TypeGuard[dict[str, Any]]:
    return isinstance(found, dict) and found.get("format") == MEASUREMENT_FORMAT


def measurement(store: ModelStore, version: ModelVersion) -> dict[str, Any]:
    """The version's measurement: sealed ``gate.json``, the trainer's kept one, or a new one.

    Raises ValueError when the version's models cannot be run.
    """
    found = kept_measurement(store, version)
    if found is not None:
        return found
    tflite_predict(version.tflite_path, grid(*version.domain, points=3))  # fail fast
    report = _measure_in_child(version)
    kept = store.model_dir(version.model_name) / GATES_DIR
    kept.mkdir(exist_ok=True)
    write_json_atomic(kept / f"{version.version}.json", report)
    return report


def _measure_in_child(version: ModelVersion) -> dict[str, Any]:
    """Measure in a child process: TensorFlow stays out of the server's workers."""
    options = {"domain": list(version.domain), "num_neurons": num_neurons_of(version.metadata)}
    module = "trainer_service.training.measure"
    command = [sys.executable, "-m", module, str(version.path), json.dumps(options)]
    try:
        done = subprocess.run(  # noqa: S603 (our own module, arguments we built)
            command, capture_output=True, text=True, timeout=_CHILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise ValueError(f"measuring took over {_CHILD_TIMEOUT:.0f} s") from exc
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"the SavedModel cannot be measured: {last}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


# --- the decision at a label move ------------------------------------------------------------


def judge(
    store: ModelStore,
    candidate: ModelVersion,
    incumbent: ModelVersion | None,
    thresholds: Thresholds,
) -> dict[str, Any]:
    """The gate report for moving a label from ``incumbent`` (None: unset) to ``candidate``."""
    started = time.perf_counter()
    try:
        measured = measurement(store, candidate)
    except ValueError as exc:
        runs = {"name": "runs", "passed": False, "detail": str(exc)}
        return _report(candidate, incumbent, None, [runs], started)
    ratio = measured.get("floor_ratio")
    allowed = thresholds.agreement_tolerance * max(1.0, float(measured["scale"]))
    checks = [
        {
            "name": "floor_ratio",
            "passed": ratio is not None and ratio <= thresholds.max_floor_ratio,
            "value": ratio,
            "limit": thresholds.max_floor_ratio,
            "detail": "in-domain MSE over the floor (mid_range / (num_neurons + 1))⁴ / 180"
            if ratio is not None
            else "the version does not say its num_neurons, so it has no floor",
        },
        {
            "name": "tflite_agrees",
            "passed": measured["max_abs_difference"] <= allowed,
            "value": measured["max_abs_difference"],
            "limit": allowed,
            "detail": "max |model.tflite - SavedModel| on the grid",
        },
        _not_worse(candidate, incumbent, thresholds.max_regression),
    ]
    return _report(candidate, incumbent, measured, checks, started)


def _not_worse(
    candidate: ModelVersion, incumbent: ModelVersion | None, factor: float
) -> dict[str, Any]:
    check: dict[str, Any] = {"name": "not_worse", "limit_factor": factor}
    if incumbent is None or incumbent.version == candidate.version:
        return {**check, "passed": True, "detail": "the label holds no other version"}
    lo = max(candidate.domain[0], incumbent.domain[0])
    hi = min(candidate.domain[1], incumbent.domain[1])
    if lo >= hi:
        return {**check, "passed": True, "detail": "the two domains do not overlap"}
    x = grid(lo, hi)
    mine = _mse(tflite_predict(candidate.tflite_path, x), x)
    try:
        theirs = _mse(tflite_predict(incumbent.tflite_path, x), x)
    except ValueError:
        return {**check, "passed": True, "detail": f"version {incumbent.version} does not run"}
    passed = math.isfinite(mine) and mine <= factor * theirs
    return {
        **check,
        "passed": passed,
        "value": mine,
        "limit": factor * theirs,
        "incumbent_mse": theirs,
        "shared_domain": [lo, hi],
        "detail": f"in-domain MSE on the shared domain against version {incumbent.version}",
    }


def _report(
    candidate: ModelVersion,
    incumbent: ModelVersion | None,
    measured: dict[str, Any] | None,
    checks: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    return {
        "version": candidate.version,
        "incumbent": incumbent.version if incumbent else None,
        "passed": all(check["passed"] for check in checks),
        "checks": checks,
        "measurement": measured,
        "seconds": time.perf_counter() - started,
    }
