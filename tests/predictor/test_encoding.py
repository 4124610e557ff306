"""Predict's hand-written wire format agrees with protobuf's, in both directions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]

from predictor_service.encoding import decode_request, encode_response
from squarenet.v1 import predictor_pb2


@pytest.mark.parametrize(
    "request_",
    [
        predictor_pb2.PredictRequest(x=[2.5]),
        predictor_pb2.PredictRequest(x=[-0.0]),
        predictor_pb2.PredictRequest(x=[math.nan]),
        predictor_pb2.PredictRequest(x=[1.0, 2.0, 3.0]),
        predictor_pb2.PredictRequest(x=[1.0], version=3),
        predictor_pb2.PredictRequest(x=[1.0], version_label="canary"),
        predictor_pb2.PredictRequest(x=[1.0], version=-2),
        predictor_pb2.PredictRequest(),
    ],
)
def test_requests_decode_as_protobuf_reads_them(request_: predictor_pb2.PredictRequest) -> None:
    call = decode_request(request_.SerializeToString())
    assert np.array_equal(list(call.x), list(request_.x), equal_nan=True)
    assert call.version == request_.version
    assert call.version_label == request_.version_label


def test_an_unpacked_double_is_read_too() -> None:
    unpacked = b"\x09" + np.float64(4.0).tobytes()  # field 1, wire type 1 (fixed64)
    assert list(decode_request(unpacked).x) == [4.0]


def test_garbage_raises_protobufs_error() -> None:
    with pytest.raises(DecodeError):
        decode_request(b"\x0a\x08\x01")


@pytest.mark.parametrize(
    ("y", "version", "flags"),
    [
        ([1.5], 3, [False]),
        ([1.5], 3, [True]),
        ([0.25, -7.0, 3e38], 12345678901, [False, True, False]),
        ([2.0], 0, [False]),
        (list(np.linspace(-5, 5, 1000)), 2**40, [v > 0 for v in np.linspace(-5, 5, 1000)]),
    ],
)
def test_responses_are_what_protobuf_reads_back(
    y: list[float], version: int, flags: list[bool]
) -> None:
    values = np.asarray(y, dtype=np.float32)
    encoded = encode_response(values, version, np.asarray(flags) if len(y) > 1 else flags)
    decoded = predictor_pb2.PredictResponse.FromString(encoded)
    assert list(decoded.y) == [float(v) for v in values]
    assert decoded.version == version
    assert list(decoded.extrapolated) == flags
    expected = predictor_pb2.PredictResponse(
        y=values.tolist(), version=version, extrapolated=flags
    ).SerializeToString()
    assert encoded == expected  # byte for byte what protobuf itself writes
