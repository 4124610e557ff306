"""A small client for the predictor's gRPC API, mapping status codes to exit codes.

An UNAVAILABLE answer is told apart by the channel's state: no connection means "nothing
listens at HOST:PORT" (exit 3), a live one means "the predictor has no model yet" (exit 5).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final

import grpc

from squarenet.cli.errors import CliError, ExitCode
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

DEFAULT_TIMEOUT: Final = 10.0

# Predict reads and never writes, so a call the server cancelled may be sent again. A
# predictor that stops (a rolling update, a scale-down) answers the calls it holds when its
# grace ends, and a call racing its GOAWAY can still be CANCELLED by the server: the channel
# sends it again, to the next pod. UNAVAILABLE is not retried here: "no model loaded yet"
# is an answer the caller must see.
SERVICE_CONFIG: Final = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{"service": "squarenet.v1.Predictor", "method": "Predict"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["CANCELLED"],
                },
            }
        ]
    }
)
CHANNEL_OPTIONS: Final = (("grpc.enable_retries", 1), ("grpc.service_config", SERVICE_CONFIG))

_REJECTED_CODES: Final = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.ALREADY_EXISTS,
    }
)


@dataclass(frozen=True)
class Prediction:
    """One answered value: the input, the model's y and whether x was outside its domain."""

    x: float
    y: float
    extrapolated: bool

    @property
    def expected(self) -> float:
        """The true value x²."""
        return self.x * self.x

    @property
    def error(self) -> float:
        """Prediction minus truth (positive: the model overshoots)."""
        return self.y - self.expected


@dataclass(frozen=True)
class PredictResult:
    """Every prediction of one call and the model version that answered it."""

    version: int
    predictions: list[Prediction]


def parse_target(target: str) -> str:
    """Check HOST:PORT (IPv6 as [addr]:port) and return it; raise a usage error otherwise."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"invalid predictor address {target!r}: expected HOST:PORT", ExitCode.USAGE)
    return target


class PredictorClient:
    """Calls the squarenet.v1.Predictor service at ``target`` over an insecure channel."""

    def __init__(self, target: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.target = parse_target(target)
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        self._stub = predictor_pb2_grpc.PredictorStub(self._channel)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> PredictorClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _connected(self) -> bool:
        """Whether the channel holds a live connection (a refused one fails at once)."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=0.2)
        except grpc.FutureTimeoutError:
            return False
        return True

    def predict(self, xs: Sequence[float], version: int = 0, label: str = "") -> PredictResult:
        """Predict: y for every x from the default version (or the pinned one, or a label's)."""
        request = predictor_pb2.PredictRequest(x=list(xs), version=version, version_label=label)
        try:
            response = self._stub.Predict(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._status_error(exc) from exc
        flags = list(response.extrapolated) or [False] * len(response.y)
        return PredictResult(
            version=int(response.version),
            predictions=[
                Prediction(float(x), float(y), bool(flag))
                for x, y, flag in zip(xs, response.y, flags, strict=False)
            ],
        )

    def get_model(self) -> predictor_pb2.Model:
        """GetModel: the newest model being served."""
        try:
            model: predictor_pb2.Model = self._stub.GetModel(
                predictor_pb2.GetModelRequest(), timeout=self.timeout
            )
        except grpc.RpcError as exc:
            raise self._status_error(exc) from exc
        return model

    def watch_model(self, timeout: float | None = None) -> Iterator[predictor_pb2.Model]:
        """WatchModel: the current model at once, then each change, until the stream ends."""
        stream = self._stub.WatchModel(predictor_pb2.WatchModelRequest(), timeout=timeout)
        try:
            yield from stream
        except grpc.RpcError as exc:
            raise self._status_error(exc) from exc
        finally:
            stream.cancel()

    def _status_error(self, exc: grpc.RpcError) -> CliError:
        code: grpc.StatusCode = exc.code()
        details: str = exc.details() or ""
        text = f"predictor at {self.target} answered {code.name}: {details}".rstrip(": ")
        if code in _REJECTED_CODES:
            return CliError(text, ExitCode.REJECTED)
        if code is grpc.StatusCode.DEADLINE_EXCEEDED:
            return CliError(
                f"predictor at {self.target} did not answer within {self.timeout:g}s",
                ExitCode.UNREACHABLE,
            )
        if code is grpc.StatusCode.UNAVAILABLE and not self._connected():
            return CliError(
                f"cannot reach the predictor at {self.target}: {details}", ExitCode.UNREACHABLE
            )
        if code is grpc.StatusCode.CANCELLED:
            return CliError(f"predictor at {self.target} closed the call", ExitCode.UNREACHABLE)
        return CliError(text, ExitCode.SERVICE_ERROR)
