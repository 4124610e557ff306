"""Predict's request and response bytes, read and written without building messages.

A one-value Predict spends more time in protobuf's Python objects than in the model:
building a ``PredictResponse`` from lists costs about 6 µs, the model about 9 µs. The wire
format of these two messages is small and fixed (proto3, ``protos/squarenet/v1``):

    PredictRequest   1: repeated double x (packed)   2: int64 version   3: string version_label
    PredictResponse  1: repeated double y (packed)   2: int64 version   3: repeated bool extrapolated

so the commonest request (one value, nothing else: ten bytes) is read with one ``struct``
call and every response is written directly. Anything else is parsed by protobuf, so every
valid encoding (unpacked doubles, fields in any order, unknown fields) is still accepted.
``tests/predictor/test_encoding.py`` checks both directions against protobuf.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from squarenet.v1 import predictor_pb2

#: Tag of field 1 (length-delimited) and the length of one packed double.
_ONE_VALUE_PREFIX = b"\x0a\x08"
_ONE_VALUE_SIZE = 10
_DOUBLE = struct.Struct("<d")
_Y_TAG = b"\x0a"
_VERSION_TAG = b"\x10"
_FLAGS_TAG = b"\x1a"
_FALSE, _TRUE = b"\x00", b"\x01"


@dataclass(frozen=True, slots=True)
class PredictCall:
    """What a PredictRequest asks: the values, and the version or label to answer with."""

    x: Sequence[float]
    version: int = 0
    version_label: str = ""


def decode_request(data: bytes) -> PredictCall:
    """The call a PredictRequest's bytes encode; raises protobuf's DecodeError when invalid."""
    if len(data) == _ONE_VALUE_SIZE and data.startswith(_ONE_VALUE_PREFIX):
        return PredictCall(_DOUBLE.unpack_from(data, 2))
    request = predictor_pb2.PredictRequest.FromString(data)
    return PredictCall(request.x, request.version, request.version_label)


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1  # negative int64 values take ten bytes, as protobuf writes them
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_response(
    y: NDArray[np.float32], version: int, extrapolated: Sequence[bool] | NDArray[np.bool_]
) -> bytes:
    """A PredictResponse's bytes: y as packed doubles, the version, the flags as packed bools."""
    count = len(y)
    if count == 1:
        values = _DOUBLE.pack(float(y[0]))
        flags = _TRUE if extrapolated[0] else _FALSE
    else:
        values = np.asarray(y, dtype="<f8").tobytes()
        flags = np.asarray(extrapolated, dtype=np.bool_).tobytes()
    size = _varint(count)
    parts = [_Y_TAG, _varint(8 * count), values]
    if version:
        parts += [_VERSION_TAG, _varint(version)]
    parts += [_FLAGS_TAG, size, flags]
    return b"".join(parts)
