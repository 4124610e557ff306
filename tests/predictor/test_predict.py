"""Predict, GetModel and every status code, against one real predictor process."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from predictor.predictor_harness import Launcher, Predictor, add_version
from squarenet.store import ModelStore
from squarenet.v1 import predictor_pb2

MAX_BATCH = 1000


@pytest.fixture(scope="module")
def predictor(
    trained_versions: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Predictor]:
    """A predictor keeping both trained versions loaded, at most MAX_BATCH values a call."""
    root = tmp_path_factory.mktemp("predict")
    store = ModelStore(root / "store")
    for folder in trained_versions:
        add_version(store, folder)
    launcher = Launcher(root)
    started = launcher.start(store, "--versions", "2", "--max-batch", str(MAX_BATCH))
    started.wait_serving()
    yield started
    launcher.close_all()


@pytest.fixture(scope="module")
def idle_predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Predictor]:
    """A predictor on an empty store: no model to answer with."""
    root = tmp_path_factory.mktemp("idle")
    launcher = Launcher(root)
    yield launcher.start(ModelStore(root / "store"))
    launcher.close_all()


def litert_predict(tflite: Path, x: list[float]) -> list[float]:
    """What the model file itself says, computed here without the server."""
    interpreter = Interpreter(model_path=str(tflite))
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, [len(x), 1])
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, np.array(x, dtype=np.float32).reshape(-1, 1))
    interpreter.invoke()
    out = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return [float(v) for v in out.reshape(-1)]


def test_predict_answers_about_x_squared_from_the_newest_version(
    predictor: Predictor, trained_versions: list[Path]
) -> None:
    x = [-4.0, -2.5, -1.0, 0.0, 1.5, 3.0, 4.5]
    response = predictor.stub.Predict(predictor_pb2.PredictRequest(x=x), timeout=5)
    assert response.version == 2
    assert list(response.y) == pytest.approx(
        litert_predict(trained_versions[1] / "model.tflite", x)
    )
    # The tiny test model has an in-domain MSE near 0.2: every answer is within 1.5 of x².
    assert np.abs(np.array(response.y) - np.square(x)).max() < 1.5
    assert list(response.extrapolated) == [False] * len(x)


def test_extrapolated_marks_exactly_the_values_outside_the_closed_domain(
    predictor: Predictor,
) -> None:
    x = [-10.0, -5.000001, -5.0, 5.0, 5.000001, 7.5]
    response = predictor.stub.Predict(predictor_pb2.PredictRequest(x=x), timeout=5)
    assert list(response.extrapolated) == [True, True, False, False, True, True]


def test_pinned_version_answers_with_that_version(
    predictor: Predictor, trained_versions: list[Path]
) -> None:
    x = [1.0, 2.0]
    old = predictor.stub.Predict(predictor_pb2.PredictRequest(x=x, version=1), timeout=5)
    new = predictor.stub.Predict(predictor_pb2.PredictRequest(x=x, version=2), timeout=5)
    assert (old.version, new.version) == (1, 2)
    assert list(old.y) == pytest.approx(litert_predict(trained_versions[0] / "model.tflite", x))
    assert list(old.y) != list(new.y)


def test_a_full_batch_is_answered_in_order(predictor: Predictor) -> None:
    x = np.linspace(-8, 8, MAX_BATCH).tolist()
    response = predictor.stub.Predict(predictor_pb2.PredictRequest(x=x), timeout=5)
    assert len(response.y) == len(response.extrapolated) == MAX_BATCH
    assert list(response.extrapolated) == [abs(v) > 5 for v in x]


def test_get_model_describes_the_newest_and_the_loaded_versions(predictor: Predictor) -> None:
    model = predictor.stub.GetModel(predictor_pb2.GetModelRequest(), timeout=5)
    assert model.version == 2
    assert (model.domain_min, model.domain_max) == (-5.0, 5.0)
    assert model.job_id == "job-seed-2"
    assert model.created_at
    assert set(model.metrics) >= {"loss", "val_loss", "mse_in_domain", "mse_out_of_domain"}
    assert list(model.loaded_versions) == [2, 1]


@pytest.mark.parametrize(
    ("x", "version", "code", "message"),
    [
        ([], 0, grpc.StatusCode.INVALID_ARGUMENT, "x is empty"),
        ([1.0, math.nan], 0, grpc.StatusCode.INVALID_ARGUMENT, "x[1] is NaN"),
        ([math.inf], 0, grpc.StatusCode.INVALID_ARGUMENT, "x[0] is +Inf"),
        ([0.0, 1.0, -math.inf], 0, grpc.StatusCode.INVALID_ARGUMENT, "x[2] is -Inf"),
        ([1e300], 0, grpc.StatusCode.INVALID_ARGUMENT, "x[0] is 1e+300, beyond the float32"),
        ([0.5] * (MAX_BATCH + 1), 0, grpc.StatusCode.INVALID_ARGUMENT, "at most 1000 per call"),
        ([1.0], -1, grpc.StatusCode.INVALID_ARGUMENT, "version -1 is negative"),
        ([1.0], 7, grpc.StatusCode.NOT_FOUND, "version 7 is not loaded; loaded versions: [2, 1]"),
    ],
    ids=["empty", "nan", "plus-inf", "minus-inf", "beyond-float32", "over-max-batch",
         "negative-version", "version-not-loaded"],
)  # fmt: skip
def test_bad_requests_get_a_status_that_names_the_problem(
    predictor: Predictor, x: list[float], version: int, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        predictor.stub.Predict(predictor_pb2.PredictRequest(x=x, version=version), timeout=5)
    assert raised.value.code() == code
    assert message in raised.value.details()


def test_a_request_beyond_the_receive_limit_is_resource_exhausted(predictor: Predictor) -> None:
    # The limit follows --max-batch: twice as many values no longer fit in a message.
    with pytest.raises(grpc.RpcError) as raised:
        predictor.stub.Predict(predictor_pb2.PredictRequest(x=[0.5] * (2 * MAX_BATCH)), timeout=5)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_expired_client_deadline_is_deadline_exceeded(predictor: Predictor) -> None:
    # WatchModel sends the current model, then waits for a change that does not come.
    stream = predictor.stub.WatchModel(predictor_pb2.WatchModelRequest(), timeout=0.5)
    first = next(stream)
    assert first.version == 2
    with pytest.raises(grpc.RpcError) as raised:
        next(stream)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED


def test_no_model_yet_is_unavailable(idle_predictor: Predictor) -> None:
    for call, request in [
        (idle_predictor.stub.Predict, predictor_pb2.PredictRequest(x=[1.0])),
        (idle_predictor.stub.GetModel, predictor_pb2.GetModelRequest()),
    ]:
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "no model loaded yet" in raised.value.details()


def test_bad_input_still_gets_invalid_argument_without_a_model(idle_predictor: Predictor) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        idle_predictor.stub.Predict(predictor_pb2.PredictRequest(x=[math.nan]), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_metrics_count_calls_by_method_and_code(predictor: Predictor) -> None:
    before = predictor.metric(
        "squarenet_predictor_requests_total", method="Predict", code="INVALID_ARGUMENT"
    )
    with pytest.raises(grpc.RpcError):
        predictor.stub.Predict(predictor_pb2.PredictRequest(x=[]), timeout=5)
    predictor.stub.Predict(predictor_pb2.PredictRequest(x=[1.0]), timeout=5)
    after = predictor.metric(
        "squarenet_predictor_requests_total", method="Predict", code="INVALID_ARGUMENT"
    )
    assert after == before + 1
    assert predictor.metric("squarenet_predictor_requests_total", method="Predict", code="OK") >= 1
    assert (
        predictor.metric(
            "squarenet_predictor_request_duration_seconds_count", method="Predict", code="OK"
        )
        >= 1
    )
    assert predictor.metric("squarenet_predictor_current_version") == 2
    assert predictor.metric("squarenet_predictor_loaded_versions") == 2
    assert predictor.metric("squarenet_predictor_version_loaded", version="1") == 1


def test_no_call_ever_answered_unknown(predictor: Predictor) -> None:
    assert predictor.metric("squarenet_predictor_requests_total", code="UNKNOWN") == 0
    assert predictor.metric("squarenet_predictor_requests_total", code="INTERNAL") == 0
    assert "Traceback" not in predictor.log()
