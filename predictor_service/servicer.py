"""The squarenet.v1.Predictor service: thin gRPC transport over the registry.

Every failure leaves through one place, :func:`abort_call`, as a
``context.abort`` with a status code and a message written for the client; an exception
escaping a handler would reach the client as UNKNOWN with its text, which is a bug.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
import numpy as np

from predictor_service import metrics
from predictor_service.encoding import PredictCall, encode_response
from predictor_service.registry import Registry, ServedModel, Snapshot
from predictor_service.traffic import routed, traffic_summary
from predictor_service.versions import (
    BadVersionName,
    NoModelLoaded,
    VersionError,
    VersionNotLoaded,
    resolve,
)
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

log = logging.getLogger(__name__)

#: Larger magnitudes overflow the float32 the model computes in.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Up to this many values a call is checked in plain Python, beyond it with NumPy.
_SMALL_BATCH = 16
#: How often an idle WatchModel stream checks that its client is still there.
_WATCH_CHECK_SECONDS = 1.0

_OK = grpc.StatusCode.OK


class CallError(Exception):
    """A call that cannot be answered: its status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


#: How every protocol answers a version that cannot be used.
_VERSION_CODES: dict[type[VersionError], grpc.StatusCode] = {
    NoModelLoaded: grpc.StatusCode.UNAVAILABLE,
    VersionNotLoaded: grpc.StatusCode.NOT_FOUND,
    BadVersionName: grpc.StatusCode.INVALID_ARGUMENT,
}


def version_call_error(error: VersionError) -> CallError:
    """The status a version error leaves with, whatever the protocol."""
    return CallError(_VERSION_CODES[type(error)], str(error))


def abort_call(
    context: grpc.ServicerContext, method: str, started: float, error: CallError
) -> NoReturn:
    """The one place errors leave: count the call by its code, then end it with the status."""
    metrics.recorder(method, error.code)(time.perf_counter() - started)
    context.abort(error.code, error.message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def answer_call(method: str, context: grpc.ServicerContext, call: Callable[[], Any]) -> Any:
    """Run ``call`` for the standard protocols' servicers; every refusal leaves through
    abort_call, and anything unexpected becomes INTERNAL (never UNKNOWN), counted under
    ``method``."""
    started = time.perf_counter()
    try:
        response = call()
    except CallError as exc:
        abort_call(context, method, started, exc)
    except VersionError as exc:
        abort_call(context, method, started, version_call_error(exc))
    except Exception:
        log.exception("%s failed unexpectedly", method)
        error = CallError(grpc.StatusCode.INTERNAL, f"{method} failed; see the predictor's log")
        abort_call(context, method, started, error)
    metrics.recorder(method, grpc.StatusCode.OK)(time.perf_counter() - started)
    return response


class PredictorServicer(predictor_pb2_grpc.PredictorServicer):
    """Predict, GetModel and WatchModel, answered from the registry's current snapshot."""

    def __init__(self, registry: Registry, *, max_batch: int, max_watchers: int) -> None:
        self._registry = registry
        self._max_batch = max_batch
        # Each stream holds a server thread: bound them so Predict always has threads left.
        self._max_watchers = max_watchers
        self._watch_slots = threading.BoundedSemaphore(max_watchers)

    # --- Predict ----------------------------------------------------------------------

    def Predict(  # noqa: N802 (the proto's name)
        self, request: PredictCall, context: grpc.ServicerContext
    ) -> bytes:
        """y for every x, the version that answered, and which x lie outside its domain.

        Takes the decoded call and answers the encoded PredictResponse (``encoding``): the
        one-value call, the commonest, never builds a protobuf message.
        """
        started = time.perf_counter()
        try:
            response = self._predict(request)
        except CallError as exc:
            abort_call(context, "Predict", started, exc)
        except Exception:
            log.exception("Predict failed unexpectedly")
            abort_call(
                context,
                "Predict",
                started,
                CallError(grpc.StatusCode.INTERNAL, "prediction failed; see the predictor's log"),
            )
        metrics.recorder("Predict", _OK)(time.perf_counter() - started)
        return response

    def _predict(self, request: PredictCall) -> bytes:
        count = len(request.x)
        if count == 0:
            raise CallError(grpc.StatusCode.INVALID_ARGUMENT, "x is empty: send at least one value")
        if count > self._max_batch:
            raise CallError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"x has {count} values; at most {self._max_batch} per call",
            )
        if count == 1:
            # The commonest call, kept to the fewest Python-level steps.
            value = request.x[0]
            if not -_FLOAT32_MAX <= value <= _FLOAT32_MAX:
                raise _bad_value(value, 0)
            model = self._pick(request)
            return encode_response(
                model.runtime.predict((value,)),
                model.version,
                (value < model.domain_min or value > model.domain_max,),
            )
        if count <= _SMALL_BATCH:
            # Plain Python beats NumPy's per-call overhead for a few values.
            values = list(request.x)
            for index, value in enumerate(values):
                if not -_FLOAT32_MAX <= value <= _FLOAT32_MAX:  # False for NaN too
                    raise _bad_value(value, index)
            model = self._pick(request)
            y = model.runtime.predict(values)
            lo, hi = model.domain_min, model.domain_max
            outside: list[bool] | np.ndarray = [value < lo or value > hi for value in values]
        else:
            x = np.asarray(request.x, dtype=np.float64)  # a view of the request when decoded so
            usable = np.abs(x) <= _FLOAT32_MAX  # False for NaN and ±Inf too
            if not usable.all():
                bad = int(np.argmin(usable))
                raise _bad_value(float(x[bad]), bad)
            model = self._pick(request)
            y = model.runtime.predict(x)
            outside = (x < model.domain_min) | (x > model.domain_max)
        return encode_response(y, model.version, outside)

    def _pick(self, request: PredictCall) -> ServedModel:
        snapshot = self._registry.snapshot
        if not request.version and not request.version_label:
            model = routed(snapshot)  # the commonest call: no version named
            if model is not None:
                return model
        try:
            return resolve(snapshot, request.version, request.version_label)
        except VersionError as exc:
            raise version_call_error(exc) from None

    # --- GetModel and WatchModel --------------------------------------------------------

    def GetModel(  # noqa: N802 (the proto's name)
        self, request: predictor_pb2.GetModelRequest, context: grpc.ServicerContext
    ) -> predictor_pb2.Model:
        """The model served by default, with every version loaded for pinning and the labels."""
        started = time.perf_counter()
        snapshot = self._registry.snapshot
        if snapshot.default is None:
            abort_call(
                context,
                "GetModel",
                started,
                CallError(grpc.StatusCode.UNAVAILABLE, "no model loaded yet"),
            )
        metrics.recorder("GetModel", _OK)(time.perf_counter() - started)
        return _model_message(snapshot)

    def WatchModel(  # noqa: N802 (the proto's name)
        self, request: predictor_pb2.WatchModelRequest, context: grpc.ServicerContext
    ) -> Iterator[predictor_pb2.Model]:
        """The current model at once (or as soon as there is one), then every change.

        Ends cleanly (OK) when the server shuts down; ends when the client goes away.
        """
        started = time.perf_counter()
        if not self._watch_slots.acquire(blocking=False):
            abort_call(
                context,
                "WatchModel",
                started,
                CallError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{self._max_watchers} WatchModel streams are open already; retry later",
                ),
            )
        try:
            registry = self._registry
            snapshot = registry.snapshot
            sent_generation: int | None = None
            while context.is_active() and not registry.closed:
                if snapshot.default is not None and snapshot.generation != sent_generation:
                    sent_generation = snapshot.generation
                    yield _model_message(snapshot)
                snapshot = registry.wait_for_change(snapshot.generation, _WATCH_CHECK_SECONDS)
        finally:
            self._watch_slots.release()
        code = _OK if registry.closed else grpc.StatusCode.CANCELLED
        metrics.recorder("WatchModel", code)(time.perf_counter() - started)


def _bad_value(value: float, index: int) -> CallError:
    if math.isnan(value):
        what = "NaN"
    elif math.isinf(value):
        what = "+Inf" if value > 0 else "-Inf"
    else:
        what = f"{value!r}, beyond the float32 range the model computes in"
    return CallError(
        grpc.StatusCode.INVALID_ARGUMENT, f"x[{index}] is {what}: every value must be finite"
    )


def _model_message(snapshot: Snapshot) -> predictor_pb2.Model:
    model = snapshot.default
    assert model is not None  # noqa: S101 (callers check)
    return predictor_pb2.Model(
        version=model.version,
        domain_min=model.domain_min,
        domain_max=model.domain_max,
        created_at=model.created_at,
        job_id=model.job_id,
        metrics={**model.metrics, **traffic_summary(snapshot)},
        loaded_versions=snapshot.loaded_versions,
        labels=dict(snapshot.labels),
        serving_label=snapshot.serving_label,
    )
