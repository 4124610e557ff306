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

from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from predictor_service.registry import Registry, ServedModel
from predictor_service.servicer import CallError, answer_call
from predictor_service.versions import resolve
from predictor_service.wire import Method, add_service
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


def _invalid(message: str) -> CallError:
    return CallError(_INVALID, message)


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

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """output_0 = the model's y for the signature input x."""
        return answer_call("tensorflow.serving.Predict", context, lambda: self._predict(request))

    def _predict(self, request: Any) -> Any:
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
        x = self._values(request.inputs[SIGNATURE_INPUT])
        y = model.runtime.predict(x)
        output = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape=_shape(len(y), 1), float_val=y.tolist()
        )
        return predict_pb2.PredictResponse(
            model_spec=self._spec(model), outputs={SIGNATURE_OUTPUT: output}
        )

    def _values(self, tensor: Any) -> NDArray[Any]:
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
        if tensor.tensor_content:
            if len(tensor.tensor_content) != count * dtype.itemsize:
                raise _invalid(
                    f"tensor_content holds {len(tensor.tensor_content)} bytes; the shape needs "
                    f"{count * dtype.itemsize}"
                )
            x: NDArray[Any] = np.frombuffer(tensor.tensor_content, dtype=dtype)
        else:
            values = tensor.float_val if tensor.dtype == types_pb2.DT_FLOAT else tensor.double_val
            if len(values) != count:
                raise _invalid(f"the input holds {len(values)} values; its shape says {count}")
            x = np.array(values, dtype=dtype)
        usable = np.abs(x) <= _FLOAT32_MAX  # False for NaN and ±Inf too
        if not usable.all():
            bad = int(np.argmin(usable))
            raise _invalid(f"x[{bad}] is {float(x[bad])!r}: every value must be finite (float32)")
        return x

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """The serving_default signature (the only metadata field TensorFlow Serving offers)."""
        return answer_call(
            "tensorflow.serving.GetModelMetadata", context, lambda: self._metadata(request)
        )

    def _metadata(self, request: Any) -> Any:
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

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Each version's state through the hot-swap lifecycle: LOADING, AVAILABLE, END."""
        return answer_call(
            "tensorflow.serving.GetModelStatus", context, lambda: self._status(request)
        )

    def _status(self, request: Any) -> Any:
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


def add_tf_serving(servicer: TensorFlowServingServicer, server: grpc.Server) -> None:
    """Register Predict, GetModelMetadata and GetModelStatus; the others are UNIMPLEMENTED."""
    prediction: dict[str, Method] = {
        "Predict": (
            servicer.Predict,
            predict_pb2.PredictRequest,
            predict_pb2.PredictResponse,
            False,
        ),
        "GetModelMetadata": (
            servicer.GetModelMetadata,
            get_model_metadata_pb2.GetModelMetadataRequest,
            get_model_metadata_pb2.GetModelMetadataResponse,
            False,
        ),
    }
    status: dict[str, Method] = {
        "GetModelStatus": (
            servicer.GetModelStatus,
            get_model_status_pb2.GetModelStatusRequest,
            get_model_status_pb2.GetModelStatusResponse,
            False,
        ),
    }
    add_service(server, PREDICTION_SERVICE, prediction)
    add_service(server, MODEL_SERVICE, status)
