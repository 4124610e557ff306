"""TensorFlow Serving's ``PredictionService`` (Predict, GetModelMetadata) and ``ModelService``
(GetModelStatus), answered from the registry with the vendored protos and no TensorFlow.

A client written for TensorFlow Serving serving the same store works unchanged: the model
is ``model_name``, the signature ``serving_default`` (input ``x``, output ``output_0``,
float32 [-1, 1], as the trainer's SavedModel export writes it), versions by number or
``version_label``. Outputs are answered as TensorFlow Serving does (``float_val``).

The vendored messages carry TensorFlow's own names (``tensorflow.TensorProto``), so this
module must never be imported into a process that imports TensorFlow: the server offers
these services only with ``--runtime litert``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import grpc
import numpy as np
from numpy.typing import NDArray

from predictor_service.registry import Registry, ServedModel
from predictor_service.versions import resolve
from predictor_service.views import LEAF, NotCarvable, carve, only_span, tag, varint, walked
from predictor_service.wire import CallError, Method
from squarenet.third_party.tensorflow.core.framework import (
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from squarenet.third_party.tensorflow.core.protobuf import meta_graph_pb2
from squarenet.third_party.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    status_pb2,
)
from squarenet.third_party.tensorflow_serving.apis import (
    prediction_service_pb2 as prediction_service,
)
from squarenet.third_party.xla.tsl.protobuf import error_codes_pb2

PREDICTION_SERVICE: str = prediction_service.DESCRIPTOR.services_by_name[
    "PredictionService"
].full_name
MODEL_SERVICE = "tensorflow.serving.ModelService"
SIGNATURE = "serving_default"
SIGNATURE_INPUT, SIGNATURE_OUTPUT = "x", "output_0"
PREDICT_METHOD = "tensorflow/serving/predict"
_DTYPES: dict[int, np.dtype[Any]] = {
    types_pb2.DT_FLOAT: np.dtype("<f4"),
    types_pb2.DT_DOUBLE: np.dtype("<f8"),
}
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_INVALID = grpc.StatusCode.INVALID_ARGUMENT
_STATES = {
    "LOADING": get_model_status_pb2.ModelVersionStatus.LOADING,
    "AVAILABLE": get_model_status_pb2.ModelVersionStatus.AVAILABLE,
    "END": get_model_status_pb2.ModelVersionStatus.END,
}


#: Field numbers the bulk path reads and writes, from the descriptors (``views``).
_REQUEST = predict_pb2.PredictRequest.DESCRIPTOR
_RESPONSE = predict_pb2.PredictResponse.DESCRIPTOR
_TENSOR = tensor_pb2.TensorProto.DESCRIPTOR
_INPUTS = _REQUEST.fields_by_name["inputs"]
_ENTRY_VALUE = _INPUTS.message_type.fields_by_name["value"]
_BULK = {
    _TENSOR.fields_by_name[name].number: (name, itemsize)
    for name, itemsize in (("tensor_content", 1), ("float_val", 4), ("double_val", 8))
}
_REQUEST_TREE = {_INPUTS.number: {_ENTRY_VALUE.number: dict.fromkeys(_BULK, LEAF)}}
#: From this size on the input's values are viewed in place. Measured (bench/wire.py):
#: below it, protobuf's C parser copying them costs less than walking the bytes in Python.
_VIEW_FROM_BYTES = 128 * 1024
_OUTPUTS = _RESPONSE.fields_by_name["outputs"]
_OUTPUTS_TAG = tag(_OUTPUTS)
_ENTRY_KEY_TAG = tag(_OUTPUTS.message_type.fields_by_name["key"])
_ENTRY_VALUE_TAG = tag(_OUTPUTS.message_type.fields_by_name["value"])
_SPEC_TAG = tag(_RESPONSE.fields_by_name["model_spec"])
_DTYPE_TAG = varint(_TENSOR.fields_by_name["dtype"].number << 3)  # varint wire type
_SHAPE_TAG = tag(_TENSOR.fields_by_name["tensor_shape"])
_FLOAT_VAL_TAG = tag(_TENSOR.fields_by_name["float_val"])
_DIM = _TENSOR.fields_by_name["tensor_shape"].message_type.fields_by_name["dim"]
_DIM_TAG = tag(_DIM)
_SIZE_TAG = varint(_DIM.message_type.fields_by_name["size"].number << 3)  # varint wire type


def _invalid(message: str) -> CallError:
    return CallError(_INVALID, message)


class TensorCall(NamedTuple):
    """A PredictRequest whose input values may have been cut out and viewed in place.

    When ``bulk`` is set, ``message``'s input tensor lacks that field and its bytes are here.
    """

    message: Any
    #: The TensorProto field cut out (tensor_content, float_val, double_val) and its bytes.
    bulk: tuple[str, memoryview] | None = None


def decode_predict(data: bytes) -> TensorCall:
    """The TensorCall ``data`` encodes; raises protobuf's DecodeError when invalid."""
    if len(data) >= _VIEW_FROM_BYTES:
        try:
            rest, spans = carve(data, _REQUEST_TREE)
            cut = [span for span in spans if not span.walked]
            if cut:
                if walked(spans, (_INPUTS.number,)) != 1:
                    raise NotCarvable("several inputs entries; protobuf keeps the last per key")
                field, itemsize = _BULK[cut[0].path[-1]]
                span = only_span(cut, itemsize)
                assert span is not None  # noqa: S101 (cut is not empty)
                message = predict_pb2.PredictRequest.FromString(rest)
                return TensorCall(message, (field, memoryview(data)[span.start : span.end]))
        except NotCarvable:
            pass
    return TensorCall(predict_pb2.PredictRequest.FromString(data))


def encode_predict_response(y: NDArray[np.float32], spec: bytes) -> bytes:
    """A PredictResponse with ``output_0`` = y as float_val [N, 1], in one join.

    ``spec`` is the encoded ModelSpec. Byte for byte what protobuf writes
    (``tests/proto/test_hand_wire.py``).
    """
    values = np.ascontiguousarray(y, dtype="<f4").data.cast("B")
    dims = b"".join(_dim(size) for size in (len(y), 1))
    tensor = [
        _DTYPE_TAG, varint(types_pb2.DT_FLOAT),
        _SHAPE_TAG, varint(len(dims)), dims,
        _FLOAT_VAL_TAG, varint(values.nbytes),
    ]  # fmt: skip
    head = b"".join(tensor)
    key = SIGNATURE_OUTPUT.encode()
    value_size = len(head) + values.nbytes
    entry_head = b"".join(
        [_ENTRY_KEY_TAG, varint(len(key)), key, _ENTRY_VALUE_TAG, varint(value_size), head]
    )
    return b"".join(
        [
            _OUTPUTS_TAG, varint(len(entry_head) + values.nbytes), entry_head, values,
            _SPEC_TAG, varint(len(spec)), spec,
        ]
    )  # fmt: skip


def _dim(size: int) -> bytes:
    """One TensorShapeProto.Dim (size only) as a ``dim`` entry."""
    body = _SIZE_TAG + varint(size) if size else b""
    return _DIM_TAG + varint(len(body)) + body


def _shape(*sizes: int) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in sizes]
    )


class TensorFlowServingServicer:
    """Predict, GetModelMetadata and GetModelStatus for the one model of the store."""

    def __init__(self, registry: Registry, *, model_name: str, max_batch: int) -> None:
        self._registry = registry
        self._model_name = model_name
        self._max_batch = max_batch

    def _check_name(self, spec: Any) -> None:
        if spec.name != self._model_name:
            raise CallError(
                grpc.StatusCode.NOT_FOUND,
                f"Servable not found for request: {spec.name[:80]!r}; "
                f"this server serves {self._model_name!r}",
            )

    def _model(self, spec: Any) -> ServedModel:
        self._check_name(spec)
        version = spec.version.value if spec.HasField("version") else 0
        if spec.HasField("version") and version == 0:
            raise _invalid("model_spec.version 0 is not a version; leave it unset for the default")
        return resolve(self._registry.snapshot, version, spec.version_label)

    def _spec(self, model: ServedModel) -> Any:
        return model_pb2.ModelSpec(
            name=self._model_name,
            version={"value": model.version},
            signature_name=SIGNATURE,
        )

    # --- PredictionService -------------------------------------------------------------

    def prediction_methods(self) -> dict[str, Method]:
        """PredictionService's Predict and GetModelMetadata; its others are UNIMPLEMENTED."""
        return {
            # Predict reads its input's values in place and answers encoded bytes.
            "Predict": Method(
                self.Predict,
                predict_pb2.PredictRequest,
                predict_pb2.PredictResponse,
                parse=decode_predict,
            ),
            "GetModelMetadata": Method(
                self.GetModelMetadata,
                get_model_metadata_pb2.GetModelMetadataRequest,
                get_model_metadata_pb2.GetModelMetadataResponse,
            ),
        }

    def model_methods(self) -> dict[str, Method]:
        """ModelService's GetModelStatus; HandleReloadConfigRequest is UNIMPLEMENTED."""
        return {
            "GetModelStatus": Method(
                self.GetModelStatus,
                get_model_status_pb2.GetModelStatusRequest,
                get_model_status_pb2.GetModelStatusResponse,
            ),
        }

    def Predict(self, call: TensorCall) -> bytes:  # noqa: N802
        """output_0 = the model's y for the signature input x."""
        request = call.message
        model = self._model(request.model_spec)
        signature = request.model_spec.signature_name or SIGNATURE
        if signature != SIGNATURE:
            raise CallError(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"Serving signature name: {signature[:80]!r} not found in signature def; "
                f"the model has {SIGNATURE!r}",
            )
        if set(request.inputs) != {SIGNATURE_INPUT}:
            names = sorted(name[:40] for name in request.inputs)
            raise _invalid(f"expected exactly the input {SIGNATURE_INPUT!r}, got {names}")
        unknown = sorted(set(request.output_filter) - {SIGNATURE_OUTPUT})
        if unknown:
            raise _invalid(
                f"unknown outputs {[n[:40] for n in unknown]}; the signature has {SIGNATURE_OUTPUT!r}"
            )
        x = self._values(request.inputs[SIGNATURE_INPUT], call.bulk)
        y = model.runtime.predict(x)
        return encode_predict_response(y, self._spec(model).SerializeToString())

    def _values(self, tensor: Any, bulk: tuple[str, memoryview] | None) -> NDArray[Any]:
        dtype = _DTYPES.get(tensor.dtype)
        if dtype is None:
            raise _invalid(
                f"input {SIGNATURE_INPUT!r} has dtype {tensor.dtype}; send DT_FLOAT or DT_DOUBLE"
            )
        sizes = [dim.size for dim in tensor.tensor_shape.dim]
        if (
            tensor.tensor_shape.unknown_rank
            or not (len(sizes) == 1 or (len(sizes) == 2 and sizes[1] == 1))
            or sizes[0] < 1
        ):
            raise _invalid(f"input {SIGNATURE_INPUT!r} has shape {sizes[:4]}; send [N, 1] or [N]")
        count = sizes[0]
        if count > self._max_batch:
            raise _invalid(
                f"input {SIGNATURE_INPUT!r} has {count} values; at most {self._max_batch}"
            )
        field, viewed = bulk if bulk is not None else ("", memoryview(b""))
        content = viewed if field == "tensor_content" else tensor.tensor_content
        if content:
            if len(content) != count * dtype.itemsize:
                raise _invalid(
                    f"tensor_content holds {len(content)} bytes; the shape needs "
                    f"{count * dtype.itemsize}"
                )
            x: NDArray[Any] = np.frombuffer(content, dtype=dtype)
        else:
            name = "float_val" if tensor.dtype == types_pb2.DT_FLOAT else "double_val"
            if field == name:
                values: Any = np.frombuffer(viewed, "<f4" if name == "float_val" else "<f8")
            elif field in ("float_val", "double_val"):
                values = ()  # the values came in the other dtype's field
            else:
                values = getattr(tensor, name)
            if len(values) != count:
                raise _invalid(f"the input holds {len(values)} values; its shape says {count}")
            x = np.asarray(values, dtype=dtype)
        usable = np.abs(x) <= _FLOAT32_MAX  # False for NaN and ±Inf too
        if not usable.all():
            bad = int(np.argmin(usable))
            raise _invalid(f"x[{bad}] is {float(x[bad])!r}: every value must be finite (float32)")
        return x

    def GetModelMetadata(self, request: Any) -> Any:  # noqa: N802
        """The serving_default signature (the only metadata field TensorFlow Serving offers)."""
        model = self._model(request.model_spec)
        fields = list(request.metadata_field)
        if fields != ["signature_def"]:
            raise _invalid(
                f"metadata_field must be ['signature_def'], got {[f[:40] for f in fields]}"
            )
        info = meta_graph_pb2.TensorInfo
        signature = meta_graph_pb2.SignatureDef(
            inputs={
                SIGNATURE_INPUT: info(
                    name=f"{SIGNATURE}_{SIGNATURE_INPUT}:0",
                    dtype=types_pb2.DT_FLOAT,
                    tensor_shape=_shape(-1, 1),
                )
            },
            outputs={
                SIGNATURE_OUTPUT: info(
                    name="StatefulPartitionedCall:0",
                    dtype=types_pb2.DT_FLOAT,
                    tensor_shape=_shape(-1, 1),
                )
            },
            method_name=PREDICT_METHOD,
        )
        signatures = get_model_metadata_pb2.SignatureDefMap(signature_def={SIGNATURE: signature})
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=self._spec(model))
        response.metadata["signature_def"].Pack(signatures)
        return response

    # --- ModelService ------------------------------------------------------------------

    def GetModelStatus(self, request: Any) -> Any:  # noqa: N802
        """Each version's state through the hot-swap lifecycle: LOADING, AVAILABLE, END."""
        spec = request.model_spec
        self._check_name(spec)
        states = self._registry.states()
        if spec.HasField("version") or spec.version_label:
            if spec.version_label:
                version = self._registry.snapshot.labels.get(spec.version_label)
                if version is None:
                    raise CallError(
                        grpc.StatusCode.NOT_FOUND, f"no label {spec.version_label[:40]!r}"
                    )
            else:
                version = spec.version.value
            states = [state for state in states if state.version == version]
            if not states:
                raise CallError(grpc.StatusCode.NOT_FOUND, f"version {version} was never loaded")
        if not states:
            raise CallError(grpc.StatusCode.NOT_FOUND, f"{self._model_name} has no version yet")
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=[
                get_model_status_pb2.ModelVersionStatus(
                    version=state.version,
                    state=_STATES[state.state],
                    status=status_pb2.StatusProto(
                        error_code=error_codes_pb2.UNKNOWN if state.error else error_codes_pb2.OK,
                        error_message=state.error,
                    ),
                )
                for state in states
            ]
        )
