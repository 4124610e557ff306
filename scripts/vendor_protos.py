"""Rebuild protos/squarenet/third_party/ from the protocol descriptors in the official wheels.

The Open Inference Protocol (V2, as MLServer ships it: the canonical file plus the
``parameters`` maps MLServer adds, which squarenet fills with lineage) and TensorFlow Serving's protos are published on PyPI only
as generated code; each generated module embeds its ``.proto`` file's complete descriptor.
This script prints those descriptors back as ``.proto`` source (comments are not part of a
descriptor, so they are absent), keeping every message, field number, option and service of
the canonical files unchanged. One thing differs: the files live under
``squarenet/third_party/`` and their imports say so, so the generated Python modules are
``squarenet.third_party.*`` and never shadow TensorFlow's own ``tensorflow`` package. The
protobuf package names (``inference``, ``tensorflow.serving``, ``tensorflow``) are the
canonical ones: they are what goes on the wire.

Run once when updating the pins below, with the wheels unpacked on ``PYTHONPATH`` (see
protos/squarenet/third_party/ORIGIN.md), then ``make proto``::

    PYTHONPATH=<mlserver wheel>:<tensorflow-serving-api wheel> .venv/bin/python scripts/vendor_protos.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "squarenet/third_party/"
OUT = ROOT / "protos" / PREFIX
#: The canonical files whose import closure is vendored (TensorFlow Serving's two services).
TF_SERVING_ROOTS = (
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/apis/model_service.proto",
)
#: Where the V2 file sits in the vendored tree (MLServer ships it as a top-level file).
V2_FILE = "dataplane.proto"
V2_PLACE = "open_inference/dataplane.proto"

_SCALARS = {
    descriptor_pb2.FieldDescriptorProto.TYPE_DOUBLE: "double",
    descriptor_pb2.FieldDescriptorProto.TYPE_FLOAT: "float",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT64: "int64",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT64: "uint64",
    descriptor_pb2.FieldDescriptorProto.TYPE_INT32: "int32",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED64: "fixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_FIXED32: "fixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_BOOL: "bool",
    descriptor_pb2.FieldDescriptorProto.TYPE_STRING: "string",
    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES: "bytes",
    descriptor_pb2.FieldDescriptorProto.TYPE_UINT32: "uint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED32: "sfixed32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SFIXED64: "sfixed64",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT32: "sint32",
    descriptor_pb2.FieldDescriptorProto.TYPE_SINT64: "sint64",
}


def placed(name: str) -> str:
    """Where a canonical file lives in the vendored tree (google/protobuf stays as it is)."""
    if name.startswith("google/protobuf/"):
        return name
    if name == V2_FILE:
        return PREFIX + V2_PLACE
    return PREFIX + name


def _option_value(field: Any, value: Any) -> str:
    if field.enum_type is not None:
        return str(field.enum_type.values_by_number[value].name)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def _options(options: Any) -> list[str]:
    return [
        f"{field.name} = {_option_value(field, value)}" for field, value in options.ListFields()
    ]


def _field_type(field: descriptor_pb2.FieldDescriptorProto) -> str:
    if field.type in _SCALARS:
        return _SCALARS[field.type]
    return str(field.type_name)  # fully qualified, with the leading dot


def _field_line(
    field: descriptor_pb2.FieldDescriptorProto,
    maps: dict[str, descriptor_pb2.DescriptorProto],
    proto3_optional: bool,
    proto2: bool,
) -> str:
    options = _options(field.options) if field.HasField("options") else []
    if field.HasField("default_value"):
        quoted = field.type in (field.TYPE_STRING, field.TYPE_BYTES)
        options.insert(
            0,
            f'default = "{field.default_value}"' if quoted else f"default = {field.default_value}",
        )
    suffix = f" [{', '.join(options)}]" if options else ""
    if field.type_name in maps:
        entry = maps[field.type_name]
        key, value = entry.field[0], entry.field[1]
        kind = f"map<{_field_type(key)}, {_field_type(value)}>"
    elif field.label == descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED:
        kind = f"repeated {_field_type(field)}"
    elif proto3_optional or (proto2 and field.label == field.LABEL_OPTIONAL):
        kind = f"optional {_field_type(field)}"
    elif proto2 and field.label == field.LABEL_REQUIRED:
        kind = f"required {_field_type(field)}"
    else:
        kind = _field_type(field)
    return f"{kind} {field.name} = {field.number}{suffix};"


def _reserved(message: Any, lines: list[str], pad: str, *, exclusive_end: bool) -> None:
    for span in message.reserved_range:
        end = span.end - 1 if exclusive_end else span.end
        lines.append(f"{pad}reserved {span.start}" + (f" to {end};" if end != span.start else ";"))
    if message.reserved_name:
        names = ", ".join(f'"{name}"' for name in message.reserved_name)
        lines.append(f"{pad}reserved {names};")


def _enum(enum: descriptor_pb2.EnumDescriptorProto, lines: list[str], pad: str) -> None:
    lines.append(f"{pad}enum {enum.name} {{")
    lines.extend(f"{pad}  option {option};" for option in _options(enum.options))
    for value in enum.value:
        options = _options(value.options) if value.HasField("options") else []
        suffix = f" [{', '.join(options)}]" if options else ""
        lines.append(f"{pad}  {value.name} = {value.number}{suffix};")
    _reserved(enum, lines, pad + "  ", exclusive_end=False)
    lines.append(f"{pad}}}")


def _message(
    message: descriptor_pb2.DescriptorProto, scope: str, lines: list[str], pad: str, proto2: bool
) -> None:
    full = f"{scope}.{message.name}"
    maps = {
        f"{full}.{nested.name}": nested
        for nested in message.nested_type
        if nested.options.map_entry
    }
    lines.append(f"{pad}message {message.name} {{")
    inner = pad + "  "
    lines.extend(f"{inner}option {option};" for option in _options(message.options))
    for enum in message.enum_type:
        _enum(enum, lines, inner)
    for nested in message.nested_type:
        if not nested.options.map_entry:
            _message(nested, full, lines, inner, proto2)
    done_oneofs: set[int] = set()
    for field in message.field:
        synthetic = field.proto3_optional
        if field.HasField("oneof_index") and not synthetic:
            index = field.oneof_index
            if index in done_oneofs:
                continue
            done_oneofs.add(index)
            lines.append(f"{inner}oneof {message.oneof_decl[index].name} {{")
            lines.extend(
                f"{inner}  {_field_line(member, maps, False, False)}"
                for member in message.field
                if member.HasField("oneof_index") and member.oneof_index == index
            )
            lines.append(f"{inner}}}")
            continue
        lines.append(f"{inner}{_field_line(field, maps, synthetic, proto2)}")
    _reserved(message, lines, inner, exclusive_end=True)
    if message.extension or message.extension_range:
        raise SystemExit(f"{full}: extensions are not supported by this printer")
    lines.append(f"{pad}}}")


def render(file: descriptor_pb2.FileDescriptorProto, origin: str) -> str:
    """The .proto source of one file descriptor, imports pointed at the vendored tree."""
    if file.syntax not in ("proto3", "proto2", ""):
        raise SystemExit(f"{file.name}: syntax {file.syntax!r} is not supported by this printer")
    lines = [
        f"// Vendored from {origin}: {file.name}, printed from its descriptor by",
        "// scripts/vendor_protos.py. Licence: protos/squarenet/third_party/LICENSE (Apache-2.0).",
        f'syntax = "{file.syntax or "proto2"}";',
        "",
        f"package {file.package};",
        "",
    ]
    public = set(file.public_dependency)
    for index, dependency in enumerate(file.dependency):
        keyword = "import public" if index in public else "import"
        lines.append(f'{keyword} "{placed(dependency)}";')
    if file.dependency:
        lines.append("")
    lines.extend(f"option {option};" for option in _options(file.options))
    if file.HasField("options"):
        lines.append("")
    scope = f".{file.package}" if file.package else ""
    for enum in file.enum_type:
        _enum(enum, lines, "")
        lines.append("")
    for message in file.message_type:
        _message(message, scope, lines, "", file.syntax in ("proto2", ""))
        lines.append("")
    for service in file.service:
        lines.append(f"service {service.name} {{")
        for method in service.method:
            request = ("stream " if method.client_streaming else "") + method.input_type
            response = ("stream " if method.server_streaming else "") + method.output_type
            lines.append(f"  rpc {method.name}({request}) returns ({response});")
        lines.append("}")
        lines.append("")
    if file.extension:
        raise SystemExit(f"{file.name}: extensions are not supported by this printer")
    return "\n".join(lines).rstrip() + "\n"


def _closure(pool: Any, roots: tuple[str, ...]) -> list[Any]:
    seen: dict[str, Any] = {}

    def walk(name: str) -> None:
        if name in seen:
            return
        found = pool.FindFileByName(name)
        for dependency in found.dependencies:
            walk(dependency.name)
        seen[name] = found

    for root in roots:
        walk(root)
    return [f for name, f in seen.items() if not name.startswith("google/protobuf/")]


def _write(found: Any, origin: str) -> None:
    file = descriptor_pb2.FileDescriptorProto()
    found.CopyToProto(file)
    target = OUT.parent.parent / placed(file.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(file, origin), encoding="utf-8")
    print(f"wrote {target.relative_to(ROOT)}")


def main() -> int:
    """Print the V2 file and TensorFlow Serving's closure into protos/squarenet/third_party/."""
    for module in ("model_service_pb2", "prediction_service_pb2"):  # registers the closure
        importlib.import_module(f"tensorflow_serving.apis.{module}")

    pool = descriptor_pool.Default()
    for found in _closure(pool, TF_SERVING_ROOTS):
        origin = "tensorflow-serving-api 2.21.0 and tensorflow-cpu 2.21.0 (PyPI)"
        _write(found, origin)
    spec = importlib.util.find_spec("mlserver")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("put the unpacked mlserver wheel on PYTHONPATH")
    v2_path = Path(next(iter(spec.submodule_search_locations))) / "grpc"
    v2_spec = importlib.util.spec_from_file_location("dataplane_pb2", v2_path / "dataplane_pb2.py")
    assert v2_spec is not None and v2_spec.loader is not None  # noqa: S101
    v2 = importlib.util.module_from_spec(v2_spec)
    v2_spec.loader.exec_module(v2)
    _write(v2.DESCRIPTOR, "mlserver 1.7.1 (PyPI), mlserver/grpc/dataplane_pb2.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
