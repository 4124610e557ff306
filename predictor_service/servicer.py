"""The squarenet.v1.Predictor service: Predict, GetModel and WatchModel over the registry.

Its answers raise :class:`~predictor_service.wire.CallError` for a call they cannot answer;
``wire`` turns that into the call's status, so no failure leaves any other way.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np

from predictor_service.encoding import PredictCall, decode_request, encode_response
from predictor_service.registry import Registry, ServedModel, Snapshot
from predictor_service.traffic import routed, traffic_summary
from predictor_service.versions import resolve
from predictor_service.wire import CallError, Method
from squarenet.v1 import predictor_pb2

#: Larger magnitudes overflow the float32 the model computes in.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: Up to this many values a call is checked in plain Python, beyond it with NumPy.
_SMALL_BATCH = 16


class Changes:
    """Wakes the event loop's WatchModel streams when the registry changes, from any thread.

    The poller publishes on its own thread; the streams wait on the event loop. Each change
    fires the current event and puts a fresh one in its place, so a stream that takes the
    event before it reads the snapshot cannot miss a change between the two.
    """

    def __init__(self, registry: Registry) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        registry.add_listener(self._from_any_thread)

    def _from_any_thread(self) -> None:
        self._loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    @property
    def next(self) -> asyncio.Event:
        """The event the next change sets."""
        return self._event


class PredictorServicer:
    """Predict, GetModel and WatchModel, answered from the registry's current snapshot."""

    def __init__(
        self, registry: Registry, *, model_name: str, max_batch: int, max_watchers: int
    ) -> None:
        self._registry = registry
        self._model_name = model_name
        self._max_batch = max_batch
        # Each stream holds a little memory and a wake-up per change: bound them.
        self._max_watchers = max_watchers
        self._watchers = 0
        self._changes = Changes(registry)

    def methods(self) -> dict[str, Method]:
        """The service's methods for ``wire.add_service``."""
        return {
            # Predict reads the request's bytes itself and answers the encoded response.
            "Predict": Method(
                self.Predict,
                predictor_pb2.PredictRequest,
                predictor_pb2.PredictResponse,
                parse=decode_request,
            ),
            "GetModel": Method(self.GetModel, predictor_pb2.GetModelRequest, predictor_pb2.Model),
            "WatchModel": Method(
                self.WatchModel, predictor_pb2.WatchModelRequest, predictor_pb2.Model, streams=True
            ),
        }

    # --- Predict ----------------------------------------------------------------------

    def Predict(self, request: PredictCall) -> bytes:  # noqa: N802 (the proto's name)
        """y for every x, the version that answered, and which x lie outside its domain.

        Takes the decoded call and answers the encoded PredictResponse (``encoding``): the
        one-value call, the commonest, never builds a protobuf message.
        """
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
        return resolve(snapshot, request.version, request.version_label)

    # --- GetModel and WatchModel --------------------------------------------------------

    def GetModel(self, request: predictor_pb2.GetModelRequest) -> predictor_pb2.Model:  # noqa: N802
        """The model served by default, with every version loaded for pinning and the labels."""
        snapshot = self._registry.snapshot
        if snapshot.default is None:
            raise CallError(grpc.StatusCode.UNAVAILABLE, "no model loaded yet")
        return _model_message(snapshot, self._model_name)

    async def WatchModel(  # noqa: N802 (the proto's name)
        self, request: predictor_pb2.WatchModelRequest, context: Any
    ) -> AsyncIterator[predictor_pb2.Model]:
        """The current model at once (or as soon as there is one), then every change.

        Ends cleanly (OK) when the server shuts down; a client that goes away cancels it.
        """
        if self._watchers >= self._max_watchers:
            raise CallError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._max_watchers} WatchModel streams are open already; retry later",
            )
        self._watchers += 1
        try:
            registry = self._registry
            sent_generation: int | None = None
            while True:
                change = self._changes.next  # taken before the snapshot is read
                snapshot = registry.snapshot
                if registry.closed:
                    return
                if snapshot.default is not None and snapshot.generation != sent_generation:
                    sent_generation = snapshot.generation
                    yield _model_message(snapshot, self._model_name)
                else:
                    await change.wait()
        finally:
            self._watchers -= 1


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


def _model_message(snapshot: Snapshot, model_name: str) -> predictor_pb2.Model:
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
        model_name=model_name,
    )
