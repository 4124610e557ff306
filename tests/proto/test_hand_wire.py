"""The hand-written bulk paths read and write exactly what protobuf does, for every field.

The requests are generated over the descriptors: each field the request messages define
(nested messages, maps and oneofs included) is set in turn on a bulk request, encoded by
protobuf, decoded by the hand path and compared with protobuf's own parse. The responses are
compared byte for byte with protobuf's encoding, and a field the hand encoders do not know
fails the test, so a change to a ``.proto`` cannot silently break either direction.

TF Serving's half is ``tf_hand_wire.py``, run here in a child process: its vendored
messages cannot share a process with TensorFlow, which other tests import.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from wire_fields import BULK, field_paths, mutations, path_name, set_path

from predictor_service import encoding, open_inference
from squarenet.third_party.open_inference import dataplane_pb2 as v2
from squarenet.v1 import predictor_pb2

ROOT = Path(__file__).resolve().parents[2]

# --- the three requests, their hand decoders, and the message each decodes back to ---------


def own_bulk() -> Any:
    return predictor_pb2.PredictRequest(x=np.linspace(-3, 3, BULK).tolist())


def own_back(data: bytes) -> Any:
    call = encoding.decode_request(data)
    return predictor_pb2.PredictRequest(
        x=list(call.x), version=call.version, version_label=call.version_label
    )


def v2_raw_bulk() -> Any:
    tensor = v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[BULK, 1])
    return v2.ModelInferRequest(
        model_name="square",
        inputs=[tensor],
        raw_input_contents=[np.linspace(-3, 3, BULK, dtype="<f4").tobytes()],
    )


def v2_typed_bulk() -> Any:
    contents = v2.InferTensorContents(fp64_contents=np.linspace(-3, 3, BULK).tolist())
    tensor = v2.ModelInferRequest.InferInputTensor(
        name="x", datatype="FP64", shape=[BULK], contents=contents
    )
    return v2.ModelInferRequest(model_name="square", inputs=[tensor])


def v2_back(data: bytes) -> Any:
    call = open_inference.decode_infer(data)
    message = v2.ModelInferRequest()
    message.CopyFrom(call.message)
    raw = [bytes(block) for block in call.raw]
    del message.raw_input_contents[:]
    message.raw_input_contents.extend(raw)
    if call.typed is not None:
        field, values = call.typed
        getattr(message.inputs[0].contents, field).extend(values.tolist())
    return message


#: (name, bulk request, its hand decoder back to a message, whether the bulk is viewed)
CASES: list[tuple[str, Callable[[], Any], Callable[[bytes], Any]]] = [
    ("own", own_bulk, own_back),
    ("v2-raw", v2_raw_bulk, v2_back),
    ("v2-typed", v2_typed_bulk, v2_back),
]


def _every_field() -> Iterator[Any]:
    for name, bulk, back in CASES:
        for path in field_paths(bulk().DESCRIPTOR):
            yield pytest.param(bulk, back, path, id=f"{name}:{path_name(path)}")


@pytest.mark.parametrize(("bulk", "back", "path"), list(_every_field()))
def test_every_request_field_decodes_as_protobuf_reads_it(
    bulk: Callable[[], Any], back: Callable[[bytes], Any], path: tuple[Any, ...]
) -> None:
    message = bulk()
    set_path(message, path)
    data = message.SerializeToString()
    assert back(data) == type(message).FromString(data)


def test_the_bulk_is_viewed_in_place_not_copied() -> None:
    data = own_bulk().SerializeToString()
    assert encoding.decode_request(data).x.base is data  # type: ignore[union-attr]
    raw = open_inference.decode_infer(v2_raw_bulk().SerializeToString())
    assert isinstance(raw.raw[0], memoryview) and not raw.message.raw_input_contents
    typed = open_inference.decode_infer(v2_typed_bulk().SerializeToString())
    assert typed.typed is not None and typed.typed[0] == "fp64_contents"
    assert not typed.message.inputs[0].contents.fp64_contents


@pytest.mark.parametrize(("name", "bulk", "back"), CASES, ids=[case[0] for case in CASES])
def test_damaged_bytes_are_accepted_or_refused_exactly_as_protobuf_does(
    name: str, bulk: Callable[[], Any], back: Callable[[bytes], Any]
) -> None:
    message_type = type(bulk())
    for data in mutations(bulk().SerializeToString(), 300, seed=len(name)):
        try:
            expected = message_type.FromString(data)
        except DecodeError:
            with pytest.raises(DecodeError):
                back(data)
        else:
            assert back(data) == expected


def test_unusual_but_valid_framing_falls_back_to_protobuf() -> None:
    x = np.arange(40, dtype="<f8")
    unpacked = b"".join(b"\x09" + value.tobytes() for value in x)  # field 1, fixed64 each
    split = b"\x0a\xa0\x01" + x[:20].tobytes() + b"\x0a\xa0\x01" + x[20:].tobytes()
    padded_length = b"\x0a\xc0\x82\x00" + x.tobytes()  # a non-minimal varint length
    for data in (unpacked, split, padded_length):
        assert list(encoding.decode_request(data).x) == x.tolist()


# --- responses: byte for byte ------------------------------------------------------------

#: Every field of each response message, and whether the hand encoder writes it.
WRITTEN: dict[Any, dict[str, bool]] = {
    predictor_pb2.PredictResponse.DESCRIPTOR: {"y": True, "version": True, "extrapolated": True},
    v2.ModelInferResponse.DESCRIPTOR: {
        "model_name": True, "model_version": True, "id": True, "parameters": False,
        "outputs": True, "raw_output_contents": True,
    },
    v2.ModelInferResponse.InferOutputTensor.DESCRIPTOR: {
        "name": True, "datatype": True, "shape": True, "parameters": False, "contents": False,
    },
}  # fmt: skip


@pytest.mark.parametrize("descriptor", list(WRITTEN), ids=lambda d: d.full_name)
def test_every_response_field_has_a_decision(descriptor: Any) -> None:
    """A field added to a response must be written by the hand encoder or named as not."""
    assert {field.name for field in descriptor.fields} == set(WRITTEN[descriptor])
    assert v2.ModelInferResponse.DESCRIPTOR.fields_by_name["raw_output_contents"].number == max(
        field.number for field in v2.ModelInferResponse.DESCRIPTOR.fields
    )  # written last, after the outputs, as protobuf orders fields by number


@pytest.mark.parametrize("count", [1, 2, 1000])
@pytest.mark.parametrize("names", [("square", "3", ""), ("", "", "ü-id"), ("m", "12", "r")])
@pytest.mark.parametrize("wanted", [("y", "extrapolated"), ("y",), ("extrapolated",), ()])
@pytest.mark.parametrize(("datatype", "dtype"), [("FP32", "<f4"), ("FP64", "<f8")])
def test_v2_responses_are_byte_for_byte_protobufs(
    count: int, names: tuple[str, str, str], wanted: tuple[str, ...], datatype: str, dtype: str
) -> None:
    """Model name, version and id (each empty or not), outputs, datatypes, sizes."""
    model_name, version, request_id = names
    y = np.linspace(-2, 2, count).astype(dtype)
    flags = y > 0
    shape = [count, 1] if count > 1 else [count]
    arrays = {"y": (datatype, y), "extrapolated": ("BOOL", flags)}
    outputs = [(name, arrays[name][0], shape, arrays[name][1]) for name in wanted]
    expected = v2.ModelInferResponse(
        model_name=model_name,
        model_version=version,
        id=request_id,
        outputs=[
            v2.ModelInferResponse.InferOutputTensor(name=name, datatype=kind, shape=dims)
            for name, kind, dims, _ in outputs
        ],
        raw_output_contents=[array.tobytes() for *_, array in outputs],
    ).SerializeToString()
    encoded = open_inference.encode_infer_response(model_name, version, request_id, outputs)
    assert encoded == expected


def test_v2_negative_dims_are_written_as_protobuf_writes_them() -> None:
    outputs = [("y", "FP32", [-1, 1], np.zeros(1, dtype="<f4"))]
    expected = v2.ModelInferResponse(
        outputs=[v2.ModelInferResponse.InferOutputTensor(name="y", datatype="FP32", shape=[-1, 1])],
        raw_output_contents=[np.zeros(1, dtype="<f4").tobytes()],
    ).SerializeToString()
    assert open_inference.encode_infer_response("", "", "", outputs) == expected


@pytest.mark.parametrize("count", [1, 2, 17, 1000])
@pytest.mark.parametrize("version", [0, 5, 2**40, -3])
def test_own_responses_are_byte_for_byte_protobufs(count: int, version: int) -> None:
    y = np.linspace(-2, 2, count).astype(np.float32)
    flags = y > 0
    expected = predictor_pb2.PredictResponse(
        y=y.tolist(), version=version, extrapolated=flags.tolist()
    ).SerializeToString()
    assert encoding.encode_response(y, version, flags) == expected


def test_tf_serving_hand_path_matches_protobuf_in_a_child_process() -> None:
    """Every check of ``tf_hand_wire.py`` (same kinds as above), in a process without TensorFlow."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(ROOT / "tests" / "proto" / "tf_hand_wire.py")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout
