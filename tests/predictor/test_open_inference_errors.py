"""The Open Inference Protocol's error rules, call by call, against a real predictor.

In this process (unlike TensorFlow Serving's messages, the vendored ``inference`` messages
share no names with TensorFlow's, which the test session loads to train).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from predictor.predictor_harness import Launcher, Predictor, add_version
from squarenet.store import ModelStore
from squarenet.third_party.open_inference import dataplane_pb2 as v2
from squarenet.third_party.open_inference import dataplane_pb2_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
Tensor = v2.ModelInferRequest.InferInputTensor


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, trained_versions: list[Path]
) -> Iterator[tuple[Predictor, int]]:
    root = tmp_path_factory.mktemp("v2")
    store = ModelStore(root / "store")
    version = add_version(store, trained_versions[0])
    store.set_label("square", "stable", version)
    launcher = Launcher(root)
    predictor = launcher.start(store, "--max-batch", "100")
    predictor.wait_serving()
    yield predictor, version
    launcher.close_all()


def _stub(predictor: Predictor) -> dataplane_pb2_grpc.GRPCInferenceServiceStub:
    return dataplane_pb2_grpc.GRPCInferenceServiceStub(predictor.channel)  # type: ignore[no-untyped-call]


def _raw(values: list[float], dtype: str = "<f4") -> bytes:
    return np.asarray(values, dtype=dtype).tobytes()


def _infer(**fields: Any) -> v2.ModelInferRequest:
    defaults: dict[str, Any] = {
        "model_name": "square",
        "inputs": [Tensor(name="x", datatype="FP32", shape=[2])],
        "raw_input_contents": [_raw([1.0, 2.0])],
    }
    return v2.ModelInferRequest(**{**defaults, **fields})


@pytest.mark.parametrize(
    ("request_", "code", "says"),
    [
        (_infer(model_name="cube"), NOT_FOUND, "unknown model"),
        (_infer(model_version="99"), NOT_FOUND, "not loaded"),
        (_infer(model_version="beta"), NOT_FOUND, "no label"),
        (_infer(model_version="Bad!"), INVALID, "not a version label"),
        (_infer(inputs=[Tensor(name="z", datatype="FP32", shape=[2])]), INVALID, "named 'x'"),
        (_infer(inputs=[Tensor(name="x", datatype="INT32", shape=[2])]), INVALID, "FP32 or FP64"),
        (_infer(inputs=[Tensor(name="x", datatype="FP32", shape=[1, 2])]), INVALID, "shape"),
        (_infer(inputs=[Tensor(name="x", datatype="FP32", shape=[])]), INVALID, "shape"),
        (_infer(inputs=[Tensor(name="x", datatype="FP32", shape=[0])]), INVALID, "shape"),
        (_infer(inputs=[Tensor(name="x", datatype="FP32", shape=[101])]), INVALID, "at most 100"),
        (_infer(raw_input_contents=[_raw([1.0])]), INVALID, "bytes"),
        (_infer(raw_input_contents=[_raw([1.0, 2.0])] * 2), INVALID, "not both"),
        (_infer(raw_input_contents=[_raw([1.0, float("nan")])]), INVALID, "x[1]"),
        (
            _infer(
                inputs=[
                    Tensor(
                        name="x",
                        datatype="FP64",
                        shape=[2],
                        contents=v2.InferTensorContents(fp64_contents=[1.0]),
                    )
                ],
                raw_input_contents=[],
            ),
            INVALID,
            "holds 1 values",
        ),
        (
            _infer(outputs=[v2.ModelInferRequest.InferRequestedOutputTensor(name="z")]),
            INVALID,
            "unknown outputs",
        ),
    ],
)
def test_bad_calls_get_the_protocols_status(
    served: tuple[Predictor, int], request_: v2.ModelInferRequest, code: grpc.StatusCode, says: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _stub(served[0]).ModelInfer(request_, timeout=5)
    assert caught.value.code() == code
    assert says in (caught.value.details() or "")


def test_contents_raw_bytes_labels_and_requested_outputs(served: tuple[Predictor, int]) -> None:
    predictor, version = served
    stub = _stub(predictor)
    by_contents = stub.ModelInfer(
        _infer(
            inputs=[
                Tensor(
                    name="x",
                    datatype="FP64",
                    shape=[2, 1],
                    contents=v2.InferTensorContents(fp64_contents=[2.0, 7.0]),
                )
            ],
            raw_input_contents=[],
            model_version="stable",
            id="call-1",
        ),
        timeout=5,
    )
    assert by_contents.model_version == str(version) and by_contents.id == "call-1"
    assert [(o.name, o.datatype, list(o.shape)) for o in by_contents.outputs] == [
        ("y", "FP64", [2, 1]),
        ("extrapolated", "BOOL", [2, 1]),
    ]
    y = np.frombuffer(by_contents.raw_output_contents[0], dtype="<f8")
    assert abs(y[0] - 4) < 0.5
    assert list(np.frombuffer(by_contents.raw_output_contents[1], dtype=np.bool_)) == [False, True]
    only_flags = stub.ModelInfer(
        _infer(outputs=[v2.ModelInferRequest.InferRequestedOutputTensor(name="extrapolated")]),
        timeout=5,
    )
    assert [o.name for o in only_flags.outputs] == ["extrapolated"]


def test_readiness_and_metadata_calls(served: tuple[Predictor, int]) -> None:
    predictor, version = served
    stub = _stub(predictor)
    assert stub.ServerLive(v2.ServerLiveRequest()).live
    assert stub.ServerReady(v2.ServerReadyRequest()).ready
    assert stub.ModelReady(v2.ModelReadyRequest(name="square", version="stable")).ready
    assert not stub.ModelReady(v2.ModelReadyRequest(name="square", version="99")).ready
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelReady(v2.ModelReadyRequest(name="cube"))
    assert caught.value.code() == NOT_FOUND
    metadata = stub.ModelMetadata(v2.ModelMetadataRequest(name="square"))
    assert metadata.parameters["version"].int64_param == version
    assert metadata.parameters["label.stable"].int64_param == version


def test_undecodable_bytes_are_invalid_argument(served: tuple[Predictor, int]) -> None:
    call = served[0].channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    with pytest.raises(grpc.RpcError) as caught:
        call(b"\x0a\xff\xff", timeout=5)
    assert caught.value.code() == INVALID
