"""The Open Inference Protocol (KServe V2, ``inference.GRPCInferenceService``) over the registry.

What Triton, KServe and MLServer clients speak. The model is the store's ``model_name``;
``model_version`` is "" (the default version), a number, or a version label. Input ``x``
is FP32 or FP64 of shape [N] or [N, 1], in ``contents`` or ``raw_input_contents``; outputs
``y`` (x's datatype and shape) and ``extrapolated`` (BOOL) are answered as raw bytes, which
is what ``tritonclient``'s ``as_numpy`` reads. Lineage travels in ``parameters`` of
ModelMetadata, as MLServer does. Triton's other calls are not offered: UNIMPLEMENTED.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import grpc
import numpy as np
from numpy.typing import NDArray

from predictor_service.registry import Registry, ServedModel
from predictor_service.versions import VersionError, resolve_text
from predictor_service.views import LEAF, NotCarvable, carve, tag, varint
from predictor_service.wire import CallError, Method
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
_SCALAR = {4: struct.Struct("<f"), 8: struct.Struct("<d")}
_TRUE, _FALSE = b"\x01", b"\x00"
_BOTH_OUTPUTS = frozenset((OUTPUT, FLAGS))


#: Field numbers the bulk path reads and writes, from the descriptors (``views``).
_REQUEST = v2.ModelInferRequest.DESCRIPTOR
_RESPONSE = v2.ModelInferResponse.DESCRIPTOR
_CONTENTS = v2.InferTensorContents.DESCRIPTOR
_INPUTS = _REQUEST.fields_by_name["inputs"]
_RAW_INPUT = _REQUEST.fields_by_name["raw_input_contents"]
_TENSOR_CONTENTS = _INPUTS.message_type.fields_by_name["contents"]
_TYPED = {
    _CONTENTS.fields_by_name[field].number: (field, dtype)
    for dtype, field in (("<f4", "fp32_contents"), ("<f8", "fp64_contents"))
}
_REQUEST_TREE = {
    _RAW_INPUT.number: LEAF,
    _INPUTS.number: {_TENSOR_CONTENTS.number: dict.fromkeys(_TYPED, LEAF)},
}
#: From this size on bulk fields are viewed in place. Measured (bench/wire.py): below it,
#: protobuf's C parser copying the block costs less than walking the bytes in Python.
_VIEW_FROM_BYTES = 128 * 1024
_OUTPUT = _RESPONSE.fields_by_name["outputs"].message_type
_TAGS = {
    name: tag(_RESPONSE.fields_by_name[name])
    for name in ("model_name", "model_version", "id", "outputs", "raw_output_contents")
}
_OUTPUT_TAGS = {name: tag(_OUTPUT.fields_by_name[name]) for name in ("name", "datatype", "shape")}


def _invalid(message: str) -> CallError:
    return CallError(_INVALID, message)


class InferCall(NamedTuple):
    """A ModelInferRequest whose bulk fields may have been cut out and viewed in place.

    ``message`` is the parsed request; when ``viewed`` its ``raw_input_contents`` and typed
    ``contents`` are empty and the values are in ``raw`` and ``typed`` instead.
    """

    message: Any
    raw: Sequence[bytes | memoryview]
    #: The typed contents field that was cut out (e.g. ``fp32_contents``) and its values.
    typed: tuple[str, NDArray[Any]] | None = None


def decode_infer(data: bytes) -> InferCall:
    """The InferCall ``data`` encodes; raises protobuf's DecodeError when invalid."""
    if len(data) >= _VIEW_FROM_BYTES:
        try:
            return _carved_infer(data)
        except NotCarvable:
            pass
    message = v2.ModelInferRequest.FromString(data)
    return InferCall(message, message.raw_input_contents)


def _carved_infer(data: bytes) -> InferCall:
    rest, spans = carve(data, _REQUEST_TREE)
    view = memoryview(data)
    raw = [view[s.start : s.end] for s in spans if s.path == (_RAW_INPUT.number,)]
    typed_spans = [s for s in spans if len(s.path) == 3 and not s.walked]
    message = v2.ModelInferRequest.FromString(rest)
    if not typed_spans:
        return InferCall(message, raw or message.raw_input_contents)
    if len(typed_spans) > 1 or len(message.inputs) != 1:
        raise NotCarvable("typed contents in several places; protobuf merges them")
    span = typed_spans[0]
    field, dtype = _TYPED[span.path[-1]]
    itemsize = np.dtype(dtype).itemsize
    if (span.end - span.start) % itemsize:
        raise NotCarvable("packed contents are not a whole number of values")
    values = np.frombuffer(data, dtype, (span.end - span.start) // itemsize, span.start)
    return InferCall(message, raw, (field, values))


def _string(field_tag: bytes, text: str) -> bytes:
    """A proto3 string field (nothing when empty, as protobuf omits it)."""
    if not text:
        return b""
    encoded = text.encode()
    return field_tag + varint(len(encoded)) + encoded


@lru_cache(maxsize=64)
def _names(model_name: str, model_version: str) -> bytes:
    """model_name and model_version: the same for every call to one version."""
    return _string(_TAGS["model_name"], model_name) + _string(_TAGS["model_version"], model_version)


@lru_cache(maxsize=1024)
def _output(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    """One ``outputs`` entry (name, datatype, shape): repeats for every call of one size."""
    tensor = _string(_OUTPUT_TAGS["name"], name) + _string(_OUTPUT_TAGS["datatype"], datatype)
    if shape:
        dims = b"".join(varint(size) for size in shape)
        tensor += _OUTPUT_TAGS["shape"] + varint(len(dims)) + dims
    return _TAGS["outputs"] + varint(len(tensor)) + tensor


def encode_infer_response(
    model_name: str,
    model_version: str,
    request_id: str,
    outputs: Sequence[tuple[str, str, list[int], NDArray[Any] | bytes]],
) -> bytes:
    """A ModelInferResponse's bytes with each output's array as raw contents, built in one join.

    ``outputs`` are (name, datatype, shape, array or its bytes); byte for byte what protobuf writes for the
    same message (``tests/proto/test_hand_wire.py``).
    """
    parts: list[bytes | memoryview] = [
        _names(model_name, model_version),
        _string(_TAGS["id"], request_id),
    ]
    parts += [_output(name, datatype, tuple(shape)) for name, datatype, shape, _ in outputs]
    for *_, array in outputs:
        block = array if isinstance(array, bytes) else np.ascontiguousarray(array).data.cast("B")
        parts += [_TAGS["raw_output_contents"], varint(len(block)), block]
    return b"".join(parts)


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

    def methods(self) -> dict[str, Method]:
        """The six calls squarenet offers, for ``wire.add_service``; the rest are UNIMPLEMENTED."""
        return {
            "ServerLive": Method(self.ServerLive, v2.ServerLiveRequest, v2.ServerLiveResponse),
            "ServerReady": Method(self.ServerReady, v2.ServerReadyRequest, v2.ServerReadyResponse),
            "ModelReady": Method(self.ModelReady, v2.ModelReadyRequest, v2.ModelReadyResponse),
            "ServerMetadata": Method(
                self.ServerMetadata, v2.ServerMetadataRequest, v2.ServerMetadataResponse
            ),
            "ModelMetadata": Method(
                self.ModelMetadata, v2.ModelMetadataRequest, v2.ModelMetadataResponse
            ),
            # ModelInfer reads its bulk fields in place and answers encoded bytes.
            "ModelInfer": Method(
                self.ModelInfer, v2.ModelInferRequest, v2.ModelInferResponse, parse=decode_infer
            ),
        }

    # --- health and metadata ----------------------------------------------------------

    def ServerLive(self, request: Any) -> Any:  # noqa: N802
        """Live as long as the process answers."""
        return v2.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any) -> Any:  # noqa: N802
        """Ready once a model is loaded (like health SERVING)."""
        ready = self._registry.snapshot.default is not None and not self._registry.closed
        return v2.ServerReadyResponse(ready=ready)

    def ModelReady(self, request: Any) -> Any:  # noqa: N802
        """Whether the named version (or label, or the default) is loaded."""
        if request.name != self._model_name:
            self._model(request.name, "")  # NOT_FOUND
        try:
            resolve_text(self._registry.snapshot, request.version)
        except VersionError:
            return v2.ModelReadyResponse(ready=False)
        return v2.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: Any) -> Any:  # noqa: N802
        """squarenet and its version; no protocol extensions."""
        return v2.ServerMetadataResponse(name="squarenet", version=__version__)

    def ModelMetadata(self, request: Any) -> Any:  # noqa: N802
        """Inputs, outputs, loaded versions; lineage (version, domain, job, metrics) in parameters."""
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

    # --- inference --------------------------------------------------------------------

    def ModelInfer(self, call: InferCall) -> bytes:  # noqa: N802
        """y and extrapolated for every x, answered as raw little-endian bytes."""
        request = call.message
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
        shape = list(tensor.shape)
        count = self._count(shape)
        wanted = self._wanted_outputs(request)
        source = self._source(call, tensor, dtype, contents_field, count)
        y: NDArray[Any] | bytes
        outside: NDArray[Any] | bytes
        if count == 1:
            # The commonest call, in plain Python: NumPy's per-call cost on a one-element
            # array (a dozen µs over the checks and flags) was most of V2's extra time.
            value = _one_value(source, dtype)
            y = model.runtime.predict((value,)).astype(dtype, copy=False)
            outside = _TRUE if value < model.domain_min or value > model.domain_max else _FALSE
        else:
            x = _array(source, dtype)
            y = model.runtime.predict(x).astype(dtype, copy=False)
            outside = (x < model.domain_min) | (x > model.domain_max)
        outputs: list[tuple[str, str, list[int], NDArray[Any] | bytes]] = []
        if OUTPUT in wanted:
            outputs.append((OUTPUT, tensor.datatype, shape, y))
        if FLAGS in wanted:
            outputs.append((FLAGS, "BOOL", shape, outside))
        return encode_infer_response(self._model_name, str(model.version), request.id, outputs)

    def _count(self, shape: list[int]) -> int:
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
            raise _invalid(f"input {INPUT!r} has shape {shape[:4]}; send [N] or [N, 1] with N >= 1")
        if shape[0] > self._max_batch:
            raise _invalid(
                f"input {INPUT!r} has {shape[0]} values; at most {self._max_batch} per call"
            )
        return shape[0]

    @staticmethod
    def _wanted_outputs(request: Any) -> set[str] | frozenset[str]:
        if not request.outputs:
            return _BOTH_OUTPUTS
        names = {output.name for output in request.outputs}
        unknown = sorted(names - {OUTPUT, FLAGS})
        if unknown:
            raise _invalid(
                f"unknown outputs {[n[:40] for n in unknown]}; offered: {OUTPUT}, {FLAGS}"
            )
        return names

    @staticmethod
    def _source(
        call: InferCall, tensor: Any, dtype: np.dtype[Any], field: str, count: int
    ) -> bytes | memoryview | Sequence[float]:
        """The input's raw block or typed values, checked against the shape and datatype."""
        if call.raw:
            if len(call.raw) != 1 or tensor.HasField("contents"):
                raise _invalid(
                    f"send {INPUT!r} either in contents or as one raw_input_contents entry, not both"
                )
            raw = call.raw[0]
            if len(raw) != count * dtype.itemsize:
                raise _invalid(
                    f"raw_input_contents holds {len(raw)} bytes; shape and datatype need "
                    f"{count * dtype.itemsize}"
                )
            return raw
        if call.typed is None:
            values: Any = getattr(tensor.contents, field)
        else:  # viewed in place; any other typed field is empty
            values = call.typed[1] if call.typed[0] == field else ()
        if len(values) != count:
            raise _invalid(f"contents.{field} holds {len(values)} values; shape says {count}")
        return values  # type: ignore[no-any-return]


def _array(source: bytes | memoryview | Sequence[float], dtype: np.dtype[Any]) -> NDArray[Any]:
    """Many values as an array (a view of a raw block), every one finite in float32."""
    if isinstance(source, bytes | memoryview):
        x: NDArray[Any] = np.frombuffer(source, dtype=dtype)
    else:
        x = np.asarray(source, dtype=dtype)
    usable = np.abs(x) <= _FLOAT32_MAX  # False for NaN and ±Inf too
    if not usable.all():
        bad = int(np.argmin(usable))
        raise _not_finite(bad, float(x[bad]))
    return x


def _one_value(source: bytes | memoryview | Sequence[float], dtype: np.dtype[Any]) -> float:
    """The one value of a one-value call, finite in float32, without NumPy."""
    if isinstance(source, bytes | memoryview):
        (value,) = _SCALAR[dtype.itemsize].unpack(source)
    else:
        value = float(source[0])
    if not -_FLOAT32_MAX <= value <= _FLOAT32_MAX:  # False for NaN too
        raise _not_finite(0, value)
    return float(value)


def _not_finite(index: int, value: float) -> CallError:
    return _invalid(f"x[{index}] is {value!r}: every value must be finite (float32)")
