"""Turning a version folder into a served model: verify, load, warm, or say why not."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from predictor_service.registry import ServedModel
from predictor_service.runtime import ModelLoadError, load_runtime
from predictor_service.traffic import MeasuredRuntime
from squarenet.store import TFLITE_FILE, BrokenVersion, Fingerprint, ModelStore

_WARM_INPUT = [0.0, 1.0]


def load_version(
    store: ModelStore, model_name: str, version: int, runtime_kind: str, print_: Fingerprint
) -> ServedModel:
    """Verify every sha256, load the runtime, run one warm-up inference; raise BrokenVersion."""
    verified = store.verify_version(model_name, version)
    metadata = verified.metadata
    try:
        # Read the bytes once and check them again: the file might change after verifying.
        content = verified.tflite_path.read_bytes()
    except OSError as exc:
        raise BrokenVersion(model_name, version, f"{TFLITE_FILE} is unreadable: {exc}") from exc
    if hashlib.sha256(content).hexdigest() != metadata["files"][TFLITE_FILE]:
        raise BrokenVersion(model_name, version, f"{TFLITE_FILE} changed while loading")
    try:
        runtime = load_runtime(runtime_kind, verified.path, content)
        warm = runtime.predict(_WARM_INPUT)
    except (ModelLoadError, ValueError, RuntimeError) as exc:
        raise BrokenVersion(model_name, version, f"cannot load: {exc}") from exc
    if warm.shape != (len(_WARM_INPUT),) or not np.isfinite(warm).all():
        raise BrokenVersion(model_name, version, f"warm-up gave {warm!r} for {_WARM_INPUT!r}")
    domain_min, domain_max = verified.domain
    return ServedModel(
        version=version,
        domain_min=domain_min,
        domain_max=domain_max,
        created_at=str(metadata.get("created_at", "")),
        job_id=str(metadata.get("job_id", "")),
        metrics=_numeric_metrics(metadata.get("metrics")),
        runtime=MeasuredRuntime(runtime, version, (domain_min, domain_max)),
        fingerprint=print_,
    )


def _numeric_metrics(raw: object) -> dict[str, float]:
    """The finite numbers among a version's metrics (the proto map holds doubles only)."""
    if not isinstance(raw, dict):
        return {}
    return {
        str(name): float(value)
        for name, value in raw.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
