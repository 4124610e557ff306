"""Requests generated over protobuf descriptors: every field a message can carry, set in turn.

Shared by the hand-wire tests (``tests/proto/test_hand_wire.py`` and its TF Serving half,
``tests/proto/tf_hand_wire.py``, which runs in a child process).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from google.protobuf.descriptor import FieldDescriptor  # type: ignore[import-untyped]

BULK = 40_000  # values (160 kB as float32): past every hand path's threshold for viewing
MAX_DEPTH = 4  # TensorProto nests itself (variant_val.tensors); every field is reached by 4

_SAMPLES: dict[int, Any] = {
    FieldDescriptor.CPPTYPE_INT32: -5,
    FieldDescriptor.CPPTYPE_INT64: -(2**40),
    FieldDescriptor.CPPTYPE_UINT32: 7,
    FieldDescriptor.CPPTYPE_UINT64: 2**63 + 1,
    FieldDescriptor.CPPTYPE_DOUBLE: 1.25,
    FieldDescriptor.CPPTYPE_FLOAT: 0.5,
    FieldDescriptor.CPPTYPE_BOOL: True,
}


def sample(field: Any) -> Any:
    """A value for ``field`` that is not its default (so protobuf writes it)."""
    if field.cpp_type == FieldDescriptor.CPPTYPE_ENUM:
        return field.enum_type.values[-1].number
    if field.cpp_type == FieldDescriptor.CPPTYPE_STRING:
        return "ü-7" if field.type == FieldDescriptor.TYPE_STRING else b"\x00\xff\x08"
    return _SAMPLES[field.cpp_type]


def is_map(field: Any) -> bool:
    """Whether ``field`` is a map (its entries are messages with key and value)."""
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def field_paths(descriptor: Any, depth: int = 0) -> Iterator[tuple[Any, ...]]:
    """Every field reachable from ``descriptor``, as the chain of fields leading to it."""
    for field in descriptor.fields:
        yield (field,)
        if depth + 1 >= MAX_DEPTH or field.message_type is None:
            continue
        inner = field.message_type
        if is_map(field):
            value = inner.fields_by_name["value"]
            if value.message_type is None:
                continue
            inner = value.message_type
        for rest in field_paths(inner, depth + 1):
            yield (field, *rest)


def set_path(message: Any, path: tuple[Any, ...]) -> None:
    """Give the field at the end of ``path`` a sample value, creating what leads to it."""
    field, rest = path[0], path[1:]
    container = getattr(message, field.name)
    if is_map(field):
        value = field.message_type.fields_by_name["value"]
        key = sample(field.message_type.fields_by_name["key"])
        if value.message_type is None:
            container[key] = sample(value)
        elif rest:
            set_path(container[key], rest)
        else:
            container[key].SetInParent()
    elif field.is_repeated:
        if field.message_type is None:
            container.extend([sample(field)] * 2)
        else:
            target = container[0] if len(container) else container.add()
            if rest:
                set_path(target, rest)
    elif field.message_type is not None:
        if rest:
            set_path(container, rest)
        else:
            container.SetInParent()
    else:
        setattr(message, field.name, sample(field))


def path_name(path: tuple[Any, ...]) -> str:
    """A readable test id for ``path``."""
    return ".".join(field.name for field in path)


def mutations(data: bytes, count: int, seed: int) -> Iterator[bytes]:
    """``count`` copies of ``data`` with one byte changed, cut or inserted near its start."""
    rng = random.Random(seed)
    for _ in range(count):
        mutated = bytearray(data)
        where = rng.randrange(min(len(data), 64))  # the framing, not only the values
        choice = rng.randrange(3)
        if choice == 0:
            mutated[where] = rng.randrange(256)
        elif choice == 1:
            del mutated[where : where + rng.randrange(1, 4)]
        else:
            mutated[where:where] = bytes([rng.randrange(256)])
        yield bytes(mutated)
