"""Runs in .venv-clients: drives the predictor with clients squarenet did not write.

``checks triton|tfserving TARGET`` prints one JSON document of answers for the test to
judge; ``load triton|tfserving TARGET OUT_FILE STOP_FILE`` calls without a pause until
STOP_FILE exists, appending a line to OUT_FILE for every change of the answering version
and for every failed call; ``split triton|tfserving TARGET CALLS [SESSION]`` makes CALLS
calls (with gRPC metadata ``x-squarenet-session: SESSION`` if given) and prints how many
each version answered.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "square"


def triton_checks(target: str) -> dict[str, Any]:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    client = triton.InferenceServerClient(url=target)
    out: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(MODEL),
        "server": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata(MODEL, as_json=True),
    }
    for datatype, dtype in (("FP32", np.float32), ("FP64", np.float64)):
        x = np.array([[1.0], [2.0], [9.0]], dtype=dtype)
        tensor = triton.InferInput("x", list(x.shape), datatype)
        tensor.set_data_from_numpy(x)
        result = client.infer(MODEL, [tensor])
        out[datatype] = {
            "y": result.as_numpy("y").ravel().tolist(),
            "y_dtype": str(result.as_numpy("y").dtype),
            "extrapolated": result.as_numpy("extrapolated").ravel().tolist(),
            "version": result.get_response().model_version,
        }
    oldest = min(int(v) for v in out["metadata"]["versions"])
    tensor = triton.InferInput("x", [1], "FP32")
    tensor.set_data_from_numpy(np.array([3.0], dtype=np.float32))
    out["pinned"] = (
        client.infer(MODEL, [tensor], model_version=str(oldest)).get_response().model_version
    )
    errors = {}
    for name, call in {
        "unknown_model": lambda: client.infer("nope", [tensor]),
        "unknown_version": lambda: client.infer(MODEL, [tensor], model_version="999"),
        "bad_datatype": lambda: client.infer(MODEL, [_int_input(triton)]),
        "repository_index": client.get_model_repository_index,
    }.items():
        try:
            call()
            errors[name] = "no error"
        except InferenceServerException as exc:
            errors[name] = exc.status()
    out["errors"] = errors
    return out


def _int_input(triton: Any) -> Any:
    tensor = triton.InferInput("x", [1], "INT32")
    tensor.set_data_from_numpy(np.array([3], dtype=np.int32))
    return tensor


def tfserving_checks(target: str) -> dict[str, Any]:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import (
        get_model_metadata_pb2,
        get_model_status_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.signature_name = "serving_default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[1.0], [2.0], [9.0]], dtype=tf.float32))
    response = stub.Predict(request, timeout=10)
    out: dict[str, Any] = {
        "y": tf.make_ndarray(response.outputs["output_0"]).ravel().tolist(),
        "shape": list(tf.make_ndarray(response.outputs["output_0"]).shape),
        "version": response.model_spec.version.value,
    }
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([3.0]), dtype=tf.float64))
    request.model_spec.signature_name = "other"
    try:
        stub.Predict(request, timeout=10)
        out["other_signature"] = "no error"
    except grpc.RpcError as exc:
        out["other_signature"] = exc.code().name
    metadata_request = get_model_metadata_pb2.GetModelMetadataRequest(
        metadata_field=["signature_def"]
    )
    metadata_request.model_spec.name = MODEL
    metadata = stub.GetModelMetadata(metadata_request, timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    metadata.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    out["signature"] = {"inputs": sorted(signature.inputs), "outputs": sorted(signature.outputs)}
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = MODEL
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(
        status_request, timeout=10
    )
    out["status"] = [
        [s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state)]
        for s in status.model_version_status
    ]
    return out


def load(protocol: str, target: str, out_file: Path, stop_file: Path) -> None:
    call = _triton_caller(target) if protocol == "triton" else _tfserving_caller(target)
    seen = None
    with out_file.open("a", encoding="utf-8") as out:
        out.write("started\n")
        out.flush()
        while not stop_file.exists():
            try:
                version = call()
            except Exception as exc:  # every failure is what the test counts
                out.write(f"ERROR {type(exc).__name__}: {exc}\n")
                out.flush()
                continue
            if version != seen:
                out.write(f"version {version}\n")
                out.flush()
                seen = version


def split(protocol: str, target: str, calls: int, session: str) -> dict[str, int]:
    """How many of ``calls`` calls each version answered."""
    caller = _triton_caller if protocol == "triton" else _tfserving_caller
    call = caller(target, session)
    counts: dict[str, int] = {}
    for _ in range(calls):
        version = str(call())
        counts[version] = counts.get(version, 0) + 1
    return counts


def _triton_caller(target: str, session: str = "") -> Any:
    import tritonclient.grpc as triton

    client = triton.InferenceServerClient(url=target)
    tensor = triton.InferInput("x", [1], "FP32")
    tensor.set_data_from_numpy(np.array([2.0], dtype=np.float32))
    headers = {"x-squarenet-session": session} if session else None
    return lambda: int(client.infer(MODEL, [tensor], headers=headers).get_response().model_version)


def _tfserving_caller(target: str, session: str = "") -> Any:
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(target))
    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    metadata = (("x-squarenet-session", session),) if session else None
    return lambda: int(
        stub.Predict(request, timeout=10, metadata=metadata).model_spec.version.value
    )


if __name__ == "__main__":
    mode, protocol, target = sys.argv[1:4]
    if mode == "checks":
        checks = triton_checks if protocol == "triton" else tfserving_checks
        print(json.dumps(checks(target)))
    elif mode == "split":
        session = sys.argv[5] if len(sys.argv) > 5 else ""
        print(json.dumps(split(protocol, target, int(sys.argv[4]), session)))
    else:
        load(protocol, target, Path(sys.argv[4]), Path(sys.argv[5]))
