"""Predict's request and response bytes, read and written without building messages.

A one-value Predict spends more time in protobuf's Python objects than in the model:
building a ``PredictResponse`` from lists costs about 6 µs, the model about 9 µs. The wire
format of these two messages is small and fixed (proto3, ``protos/squarenet/v1``):

    PredictRequest   1: repeated double x (packed)   2: int64 version   3: string version_label
    PredictResponse  1: repeated double y (packed)   2: int64 version   3: repeated bool extrapolated

so the commonest request (one value, nothing else: ten bytes) is read with one ``struct``
call, a request with many values is viewed in place (``views``), and every response is
written directly from the output arrays. Anything else is parsed by protobuf, so every
valid encoding (unpacked doubles, fields in any order, unknown fields) is still accepted.
``tests/predictor/test_encoding.py`` checks both directions against protobuf.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from predictor_service.views import (
    LEAF,
    NotCarvable,
    carve,
    only_span,
    read_varint,
    tag,
    varint,
)
from squarenet.v1 import predictor_pb2

_REQUEST = predictor_pb2.PredictRequest.DESCRIPTOR
_RESPONSE = predictor_pb2.PredictResponse.DESCRIPTOR
_X = _REQUEST.fields_by_name["x"]
_X_TAG = tag(_X)
#: Tag of x (packed) and the length of one double: the one-value request's first two bytes.
_ONE_VALUE_PREFIX = _X_TAG + b"\x08"
_ONE_VALUE_SIZE = len(_ONE_VALUE_PREFIX) + 8
#: From this size on, x alone (the commonest bulk call) is viewed in place: one check.
_VIEW_FROM_BYTES = 160
#: From this size on, x beside a version or label is cut out of the bytes and viewed too.
#: Measured (bench/wire.py): below it, protobuf's C parser costs less than the Python walk.
_CARVE_FROM_BYTES = 128 * 1024
_X_TREE = {_X.number: LEAF}
_DOUBLE = struct.Struct("<d")
_Y_TAG = tag(_RESPONSE.fields_by_name["y"])
_VERSION_TAG = varint(_RESPONSE.fields_by_name["version"].number << 3)  # varint wire type
_FLAGS_TAG = tag(_RESPONSE.fields_by_name["extrapolated"])
_FALSE, _TRUE = b"\x00", b"\x01"


@dataclass(frozen=True, slots=True)
class PredictCall:
    """What a PredictRequest asks: the values, and the version or label to answer with."""

    x: Sequence[float] | NDArray[np.float64]
    version: int = 0
    version_label: str = ""


def decode_request(data: bytes) -> PredictCall:
    """The call a PredictRequest's bytes encode; raises protobuf's DecodeError when invalid.

    Many values are returned as a read-only float64 view of ``data`` (no copy).
    """
    if len(data) == _ONE_VALUE_SIZE and data.startswith(_ONE_VALUE_PREFIX):
        return PredictCall(_DOUBLE.unpack_from(data, len(_ONE_VALUE_PREFIX)))
    if len(data) >= _VIEW_FROM_BYTES:
        try:
            if data.startswith(_X_TAG):  # the commonest bulk call: x alone, packed
                size, start = read_varint(data, len(_X_TAG), len(data))
                if start + size == len(data) and not size % 8:
                    return PredictCall(np.frombuffer(data, "<f8", size // 8, start))
            if len(data) < _CARVE_FROM_BYTES:
                raise NotCarvable("small enough for protobuf")
            rest, spans = carve(data, _X_TREE)
            span = only_span(spans, 8)
        except NotCarvable:
            pass
        else:
            request = predictor_pb2.PredictRequest.FromString(rest)
            if span is None:
                return PredictCall(request.x, request.version, request.version_label)
            x = np.frombuffer(data, "<f8", (span.end - span.start) // 8, span.start)
            return PredictCall(x, request.version, request.version_label)
    request = predictor_pb2.PredictRequest.FromString(data)
    return PredictCall(request.x, request.version, request.version_label)


def encode_response(
    y: NDArray[np.float32], version: int, extrapolated: Sequence[bool] | NDArray[np.bool_]
) -> bytes:
    """A PredictResponse's bytes: y as packed doubles, the version, the flags as packed bools."""
    count = len(y)
    values: bytes | memoryview
    flags: bytes | memoryview
    if count == 1:
        values = _DOUBLE.pack(float(y[0]))
        flags = _TRUE if extrapolated[0] else _FALSE
    else:
        # Joined straight from the arrays' buffers: one copy into the answer.
        values = np.ascontiguousarray(y, dtype="<f8").data
        flags = np.ascontiguousarray(extrapolated, dtype=np.bool_).data
    size = varint(count)
    parts: list[bytes | memoryview] = [_Y_TAG, varint(8 * count), values]
    if version:
        parts += [_VERSION_TAG, varint(version)]
    parts += [_FLAGS_TAG, size, flags]
    return b"".join(parts)
