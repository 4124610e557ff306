"""The Open Inference Protocol (KServe V2, ``inference.GRPCInferenceService``) over the registry.

What Triton, KServe and MLServer clients speak. The model is the store's ``model_name``;
``model_version`` is "" (the default version), a number, or a version label. Input ``x``
is FP32 or FP64 of shape [N] or [N, 1], in ``contents`` or ``raw_input_contents``; outputs
``y`` (x's datatype and shape) and ``extrapolated`` (BOOL) are answered as raw bytes, which
is what ``tritonclient``'s ``as_numpy`` reads. Lineage travels in ``parameters`` of
ModelMetadata, as MLServer does. Triton's other calls are not offered: UNIMPLEMENTED.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from predictor_service.registry import Registry, ServedModel
from predictor_service.servicer import CallError, answer_call
from predictor_service.versions import VersionError, resolve_text
from predictor_service.wire import Method, add_service
from squarenet import __version__
from squarenet.third_party.open_inference import dataplane_pb2 as v2

SERVICE_NAME: str = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
INPUT, OUTPUT, FLAGS = "x", "y", "extrapolated"
#: V2 datatype → little-endian NumPy type of its raw bytes, and its ``contents`` field.
_DATATYPES: dict[str, tuple[np.dtype[Any], str]] = {
    "FP32": (np.dtype("<f4"), "fp32_contents"),
    "FP64": (np.dtype("<f8"), "fp64_contents"),
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _invalid(message: str) -> CallError:
    return CallError(_INVALID, message)


class OpenInferenceServicer:
    """ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata and ModelInfer."""

    def __init__(
        self, registry: Registry, *, model_name: str, max_batch: int, runtime: str
    ) -> None:
        self._registry = registry
        self._model_name = model_name
        self._max_batch = max_batch
        self._platform = f"squarenet_{runtime}"

    def _model(self, name: str, version: str) -> ServedModel:
        if name != self._model_name:
            raise CallError(
                grpc.StatusCode.NOT_FOUND,
                f"unknown model {name[:80]!r}; this server serves {self._model_name!r}",
            )
        return resolve_text(self._registry.snapshot, version)

    # --- health and metadata ----------------------------------------------------------

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Live as long as the process answers."""
        return answer_call("ServerLive", context, lambda: v2.ServerLiveResponse(live=True))

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Ready once a model is loaded (like health SERVING)."""
        ready = self._registry.snapshot.default is not None and not self._registry.closed
        return answer_call("ServerReady", context, lambda: v2.ServerReadyResponse(ready=ready))

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Whether the named version (or label, or the default) is loaded."""

        def ready() -> Any:
            if request.name != self._model_name:
                self._model(request.name, "")  # NOT_FOUND
            try:
                resolve_text(self._registry.snapshot, request.version)
            except VersionError:
                return v2.ModelReadyResponse(ready=False)
            return v2.ModelReadyResponse(ready=True)

        return answer_call("ModelReady", context, ready)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """squarenet and its version; no protocol extensions."""
        answer = v2.ServerMetadataResponse(name="squarenet", version=__version__)
        return answer_call("ServerMetadata", context, lambda: answer)

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Inputs, outputs, loaded versions; lineage (version, domain, job, metrics) in parameters."""

        def metadata() -> Any:
            model = self._model(request.name, request.version)
            snapshot = self._registry.snapshot
            tensor = v2.ModelMetadataResponse.TensorMetadata
            parameters = {
                "version": v2.InferParameter(int64_param=model.version),
                "domain_min": v2.InferParameter(string_param=repr(model.domain_min)),
                "domain_max": v2.InferParameter(string_param=repr(model.domain_max)),
                "created_at": v2.InferParameter(string_param=model.created_at),
                "job_id": v2.InferParameter(string_param=model.job_id),
                **{
                    f"metric.{name}": v2.InferParameter(string_param=repr(value))
                    for name, value in sorted(model.metrics.items())
                },
                **{
                    f"label.{label}": v2.InferParameter(int64_param=version)
                    for label, version in sorted(snapshot.labels.items())
                },
            }
            return v2.ModelMetadataResponse(
                name=self._model_name,
                versions=[str(version) for version in snapshot.loaded_versions],
                platform=self._platform,
                inputs=[tensor(name=INPUT, datatype="FP32", shape=[-1, 1])],
                outputs=[
                    tensor(name=OUTPUT, datatype="FP32", shape=[-1, 1]),
                    tensor(name=FLAGS, datatype="BOOL", shape=[-1, 1]),
                ],
                parameters=parameters,
            )

        return answer_call("ModelMetadata", context, metadata)

    # --- inference --------------------------------------------------------------------

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """y and extrapolated for every x, answered as raw little-endian bytes."""
        return answer_call("ModelInfer", context, lambda: self._infer(request))

    def _infer(self, request: Any) -> Any:
        model = self._model(request.model_name, request.model_version)
        if len(request.inputs) != 1 or request.inputs[0].name != INPUT:
            names = [tensor.name[:40] for tensor in request.inputs]
            raise _invalid(f"expected one input named {INPUT!r}, got {names}")
        tensor = request.inputs[0]
        found = _DATATYPES.get(tensor.datatype)
        if found is None:
            raise _invalid(
                f"input {INPUT!r} has datatype {tensor.datatype[:20]!r}; send FP32 or FP64"
            )
        dtype, contents_field = found
        count = self._count(list(tensor.shape))
        wanted = self._wanted_outputs(request)
        x = self._values(request, tensor, dtype, contents_field, count)
        y = model.runtime.predict(x).astype(dtype, copy=False)
        outside = (x < model.domain_min) | (x > model.domain_max)
        shape = list(tensor.shape)
        outputs, raw = [], []
        if OUTPUT in wanted:
            outputs.append(
                v2.ModelInferResponse.InferOutputTensor(
                    name=OUTPUT, datatype=tensor.datatype, shape=shape
                )
            )
            raw.append(y.tobytes())
        if FLAGS in wanted:
            outputs.append(
                v2.ModelInferResponse.InferOutputTensor(name=FLAGS, datatype="BOOL", shape=shape)
            )
            raw.append(outside.tobytes())
        return v2.ModelInferResponse(
            model_name=self._model_name,
            model_version=str(model.version),
            id=request.id,
            outputs=outputs,
            raw_output_contents=raw,
        )

    def _count(self, shape: list[int]) -> int:
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise _invalid(f"input {INPUT!r} has shape {shape[:4]}; send [N] or [N, 1] with N >= 1")
        if shape[0] > self._max_batch:
            raise _invalid(
                f"input {INPUT!r} has {shape[0]} values; at most {self._max_batch} per call"
            )
        return shape[0]

    @staticmethod
    def _wanted_outputs(request: Any) -> set[str]:
        if not request.outputs:
            return {OUTPUT, FLAGS}
        names = {output.name for output in request.outputs}
        unknown = sorted(names - {OUTPUT, FLAGS})
        if unknown:
            raise _invalid(
                f"unknown outputs {[n[:40] for n in unknown]}; offered: {OUTPUT}, {FLAGS}"
            )
        return names

    @staticmethod
    def _values(
        request: Any, tensor: Any, dtype: np.dtype[Any], field: str, count: int
    ) -> NDArray[Any]:
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1 or tensor.HasField("contents"):
                raise _invalid(
                    f"send {INPUT!r} either in contents or as one raw_input_contents entry, not both"
                )
            raw = request.raw_input_contents[0]
            if len(raw) != count * dtype.itemsize:
                raise _invalid(
                    f"raw_input_contents holds {len(raw)} bytes; shape and datatype need "
                    f"{count * dtype.itemsize}"
                )
            x: NDArray[Any] = np.frombuffer(raw, dtype=dtype)
        else:
            values = getattr(tensor.contents, field)
            if len(values) != count:
                raise _invalid(f"contents.{field} holds {len(values)} values; shape says {count}")
            x = np.array(values, dtype=dtype)
        usable = np.abs(x) <= _FLOAT32_MAX  # False for NaN and ±Inf too
        if not usable.all():
            bad = int(np.argmin(usable))
            raise _invalid(f"x[{bad}] is {float(x[bad])!r}: every value must be finite (float32)")
        return x


def add_open_inference(servicer: OpenInferenceServicer, server: grpc.Server) -> None:
    """Register the six calls squarenet offers; the rest of the service is UNIMPLEMENTED."""
    methods: dict[str, Method] = {
        "ServerLive": (servicer.ServerLive, v2.ServerLiveRequest, v2.ServerLiveResponse, False),
        "ServerReady": (servicer.ServerReady, v2.ServerReadyRequest, v2.ServerReadyResponse, False),
        "ModelReady": (servicer.ModelReady, v2.ModelReadyRequest, v2.ModelReadyResponse, False),
        "ServerMetadata": (
            servicer.ServerMetadata, v2.ServerMetadataRequest, v2.ServerMetadataResponse, False
        ),
        "ModelMetadata": (
            servicer.ModelMetadata, v2.ModelMetadataRequest, v2.ModelMetadataResponse, False
        ),
        "ModelInfer": (servicer.ModelInfer, v2.ModelInferRequest, v2.ModelInferResponse, False),
    }  # fmt: skip
    add_service(server, SERVICE_NAME, methods)
