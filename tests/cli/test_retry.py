"""The predictor client's channel sends a Predict the server CANCELLED once more, and only that.

A real grpcio server on loopback with a Predictor whose answers the test scripts (the status
a stopping pod gives a call that raced its GOAWAY cannot be produced on demand by the real
predictor): the channel's retry policy is what is under test, not the servicer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from squarenet.cli.errors import CliError, ExitCode
from squarenet.cli.predictor_client import PredictorClient
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc


class ScriptedPredictor(predictor_pb2_grpc.PredictorServicer):
    """Answers each Predict with the next status of ``script`` (OK once it runs out)."""

    def __init__(self, script: list[grpc.StatusCode]) -> None:
        self.script = script
        self.calls = 0
        self.lock = threading.Lock()

    def Predict(  # noqa: N802 (gRPC method name)
        self, request: predictor_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predictor_pb2.PredictResponse:
        with self.lock:
            self.calls += 1
            status = self.script.pop(0) if self.script else grpc.StatusCode.OK
        if status is not grpc.StatusCode.OK:
            context.abort(status, f"scripted {status.name}")
        return predictor_pb2.PredictResponse(
            version=7, y=[x * x for x in request.x], extrapolated=[False] * len(request.x)
        )


@pytest.fixture
def serve() -> Iterator[tuple[ScriptedPredictor, str]]:
    servicer = ScriptedPredictor([])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    predictor_pb2_grpc.add_PredictorServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_a_cancelled_predict_is_sent_again_and_answered(
    serve: tuple[ScriptedPredictor, str],
) -> None:
    servicer, target = serve
    servicer.script[:] = [grpc.StatusCode.CANCELLED]
    with PredictorClient(target) as client:
        result = client.predict([3.0])
    assert result.version == 7
    assert [p.y for p in result.predictions] == [9.0]
    assert servicer.calls == 2


def test_a_predict_cancelled_three_times_fails_with_exit_3(
    serve: tuple[ScriptedPredictor, str],
) -> None:
    servicer, target = serve
    servicer.script[:] = [grpc.StatusCode.CANCELLED] * 3
    with PredictorClient(target) as client, pytest.raises(CliError) as failed:
        client.predict([3.0])
    assert failed.value.code == ExitCode.UNREACHABLE
    assert servicer.calls == 3


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [
        (grpc.StatusCode.UNAVAILABLE, ExitCode.SERVICE_ERROR),
        (grpc.StatusCode.INVALID_ARGUMENT, ExitCode.REJECTED),
        (grpc.StatusCode.INTERNAL, ExitCode.SERVICE_ERROR),
    ],
)
def test_other_statuses_are_answered_at_once(
    serve: tuple[ScriptedPredictor, str], status: grpc.StatusCode, exit_code: ExitCode
) -> None:
    servicer, target = serve
    servicer.script[:] = [status]
    with PredictorClient(target) as client, pytest.raises(CliError) as failed:
        client.predict([3.0])
    assert failed.value.code == exit_code
    assert servicer.calls == 1
