"""Bulk fields of a request read in place, and written from an array in one step.

Parsing a 1,000-value request with protobuf copies its values twice before the model sees
them (into the message, then out into a list or ``bytes``), and building the response does the
same in reverse. The values are one contiguous block on the wire either way: a packed
``repeated double``/``float`` is ``tag, length, little-endian numbers``, and a ``bytes`` field
(V2 ``raw_input_contents``, TF Serving ``tensor_content``) is ``tag, length, bytes``.

:func:`carve` walks a request's bytes once, cuts those blocks out and returns where they lie,
so ``np.frombuffer`` can view them inside the bytes grpcio handed over; what is left (names,
shapes, versions: a few dozen bytes) is re-framed and parsed by protobuf as usual, so every
rule protobuf enforces on it still holds. Anything the walk does not expect (an unpacked
repeated field, a group, a truncated length, the same block twice) raises :class:`NotCarvable`
and the caller parses the whole message with protobuf instead, which then accepts it or
answers protobuf's own error. The tags come from the generated descriptors, never from
literals, so a renumbered field is followed; ``tests/proto/test_hand_wire.py`` checks every
field of every message involved against protobuf's own encoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: A field to cut out (``LEAF``) or a message to walk into, by field number.
Tree = Mapping[int, "Tree | None"]
LEAF = None

_LENGTH_DELIMITED = 2


class NotCarvable(Exception):
    """The bytes are not in the shape the fast path reads; protobuf must parse them."""


@dataclass(frozen=True, slots=True)
class Span:
    """Where one cut-out field's payload lies: the field numbers leading to it, and offsets."""

    path: tuple[int, ...]
    start: int
    end: int
    #: A message walked into (kept, with its bulk fields cut out) rather than a cut-out field.
    walked: bool = False


_ONE_BYTE = [bytes((value,)) for value in range(0x80)]


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint (negative int64 values take ten bytes, as protobuf's)."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]  # lengths and counts of small calls: no loop
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; NotCarvable past ``end``."""
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise NotCarvable("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def tag(field: Any) -> bytes:
    """The tag bytes of a length-delimited ``field`` (a FieldDescriptor)."""
    return varint(field.number << 3 | _LENGTH_DELIMITED)


def carve(data: bytes, tree: Tree) -> tuple[bytes, list[Span]]:
    """``data`` without the fields ``tree`` names, and the spans of their payloads.

    The spans of the messages walked into are listed too (``walked``), so a caller can tell
    how many there were: protobuf merges repeated map keys and singular messages, which a
    span alone cannot.
    """
    spans: list[Span] = []
    pieces = _carve(data, 0, len(data), tree=tree, path=(), spans=spans)
    if not any(not span.walked for span in spans):
        return data, []
    return b"".join(pieces), spans


def _carve(
    data: bytes, pos: int, end: int, *, tree: Tree, path: tuple[int, ...], spans: list[Span]
) -> list[bytes]:
    pieces: list[bytes] = []
    kept = pos  # start of the run of fields copied unchanged
    while pos < end:
        field_start = pos
        key, pos = read_varint(data, pos, end)
        key_end = pos
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = read_varint(data, pos, end)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == _LENGTH_DELIMITED:
            size, pos = read_varint(data, pos, end)
            value_start, pos = pos, pos + size
            if pos <= end and number in tree:
                pieces.append(data[kept:field_start])
                subtree = tree[number]
                if subtree is LEAF:
                    spans.append(Span((*path, number), value_start, pos))
                else:
                    spans.append(Span((*path, number), value_start, pos, walked=True))
                    inner = _carve(
                        data, value_start, pos, tree=subtree, path=(*path, number), spans=spans
                    )
                    body = b"".join(inner)
                    pieces += [data[field_start:key_end], varint(len(body)), body]
                kept = pos
                continue
        else:
            raise NotCarvable(f"wire type {wire_type}")
        if pos > end:
            raise NotCarvable("a field runs past its message")
        if number in tree:
            raise NotCarvable(f"field {number} is not length-delimited here")
    pieces.append(data[kept:end])
    return pieces


def only_span(spans: list[Span], itemsize: int) -> Span | None:
    """The one cut-out span a single-tensor request may carry (None if none).

    NotCarvable if there are several (protobuf would merge them) or if a packed block is not
    a whole number of ``itemsize``-byte values (protobuf would reject it).
    """
    cut = [span for span in spans if not span.walked]
    if not cut:
        return None
    if len(cut) > 1:
        raise NotCarvable("the block is split or repeated; protobuf merges it")
    span = cut[0]
    if (span.end - span.start) % itemsize:
        raise NotCarvable("a packed block's length is not a whole number of values")
    return span


def walked(spans: list[Span], path: tuple[int, ...]) -> int:
    """How many messages at ``path`` the walk went into."""
    return sum(1 for span in spans if span.walked and span.path == path)
