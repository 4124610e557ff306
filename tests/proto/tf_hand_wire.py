"""TF Serving's hand path reads and writes exactly what protobuf does, for every field.

The TF Serving half of ``test_hand_wire.py``. The vendored TensorFlow Serving messages carry
TensorFlow's own names, which cannot share a process with TensorFlow (other tests import it
to train), so ``test_hand_wire.py`` runs this file in a child pytest; it is not collected
on its own (its name does not start with ``test_``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from google.protobuf.descriptor import FieldDescriptor  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
from wire_fields import BULK, field_paths, mutations, path_name, set_path

from predictor_service import tf_serving
from squarenet.third_party.tensorflow.core.framework import (
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from squarenet.third_party.tensorflow_serving.apis import model_pb2, predict_pb2


def _tensor(**fields: Any) -> Any:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[
            tensor_shape_pb2.TensorShapeProto.Dim(size=BULK),
            tensor_shape_pb2.TensorShapeProto.Dim(size=1),
        ]
    )
    return tensor_pb2.TensorProto(tensor_shape=shape, **fields)


def tf_content_bulk() -> Any:
    x = np.linspace(-3, 3, BULK, dtype="<f4")
    tensor = _tensor(dtype=types_pb2.DT_FLOAT, tensor_content=x.tobytes())
    return predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="square"), inputs={"x": tensor}
    )


def tf_double_bulk() -> Any:
    tensor = _tensor(dtype=types_pb2.DT_DOUBLE, double_val=np.linspace(-3, 3, BULK).tolist())
    return predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name="square"), inputs={"x": tensor}
    )


def tf_back(data: bytes) -> Any:
    call = tf_serving.decode_predict(data)
    message = predict_pb2.PredictRequest()
    message.CopyFrom(call.message)
    if call.bulk is not None:
        field, block = call.bulk
        (key,) = message.inputs  # viewed only when there is exactly one input
        tensor = message.inputs[key]
        if field == "tensor_content":
            tensor.tensor_content = bytes(block)
        else:
            dtype = "<f4" if field == "float_val" else "<f8"
            getattr(tensor, field).extend(np.frombuffer(block, dtype).tolist())
    return message


BULKS = {"tf-content": tf_content_bulk, "tf-double": tf_double_bulk}


def _every_field() -> Iterator[Any]:
    for name, bulk in BULKS.items():
        for path in field_paths(bulk().DESCRIPTOR):
            yield pytest.param(bulk, path, id=f"{name}:{path_name(path)}")


@pytest.mark.parametrize(("bulk", "path"), list(_every_field()))
def test_every_request_field_decodes_as_protobuf_reads_it(bulk: Any, path: tuple[Any, ...]) -> None:
    message = bulk()
    set_path(message, path)
    data = message.SerializeToString()
    assert tf_back(data) == predict_pb2.PredictRequest.FromString(data)


def test_the_input_values_are_viewed_in_place() -> None:
    for bulk, field in ((tf_content_bulk, "tensor_content"), (tf_double_bulk, "double_val")):
        call = tf_serving.decode_predict(bulk().SerializeToString())
        assert call.bulk is not None and call.bulk[0] == field
        assert isinstance(call.bulk[1], memoryview)


@pytest.mark.parametrize("name", list(BULKS))
def test_damaged_bytes_are_accepted_or_refused_exactly_as_protobuf_does(name: str) -> None:
    for data in mutations(BULKS[name]().SerializeToString(), 300, seed=len(name)):
        try:
            expected = predict_pb2.PredictRequest.FromString(data)
        except DecodeError:
            with pytest.raises(DecodeError):
                tf_back(data)
        else:
            assert tf_back(data) == expected


def test_a_repeated_input_key_falls_back_to_protobuf() -> None:
    tensor = _tensor(dtype=types_pb2.DT_FLOAT, tensor_content=b"\x00" * 4 * BULK)
    twice = predict_pb2.PredictRequest(inputs={"x": tensor}).SerializeToString()
    later = predict_pb2.PredictRequest(inputs={"x": _tensor(dtype=types_pb2.DT_FLOAT)})
    data = twice + later.SerializeToString()  # the second "x" entry wins, without content
    assert tf_back(data) == predict_pb2.PredictRequest.FromString(data)
    assert tf_serving.decode_predict(data).bulk is None


#: Every field of each response message, and whether the hand encoder writes it.
WRITTEN: dict[Any, dict[str, bool]] = {
    predict_pb2.PredictResponse.DESCRIPTOR: {"outputs": True, "model_spec": True},
    tensor_pb2.TensorProto.DESCRIPTOR: {
        "dtype": True, "tensor_shape": True, "float_val": True, "version_number": False,
        "tensor_content": False, "half_val": False, "double_val": False, "int_val": False,
        "string_val": False, "scomplex_val": False, "int64_val": False, "bool_val": False,
        "dcomplex_val": False, "resource_handle_val": False, "variant_val": False,
        "uint32_val": False, "uint64_val": False, "float8_val": False,
    },
}  # fmt: skip


@pytest.mark.parametrize("descriptor", list(WRITTEN), ids=lambda d: d.full_name)
def test_every_response_field_has_a_decision(descriptor: Any) -> None:
    """A field added to a response must be written by the hand encoder or named as not."""
    assert {field.name for field in descriptor.fields} == set(WRITTEN[descriptor])
    tensor = tensor_pb2.TensorProto.DESCRIPTOR.fields_by_name
    assert tensor["float_val"].cpp_type == FieldDescriptor.CPPTYPE_FLOAT


@pytest.mark.parametrize("count", [1, 3, 1000])
@pytest.mark.parametrize("version", [1, 2**40])
@pytest.mark.parametrize("label", ["", "canary"])
def test_tf_serving_responses_are_byte_for_byte_protobufs(
    count: int, version: int, label: str
) -> None:
    y = np.linspace(-2, 2, count).astype("<f4")
    spec = model_pb2.ModelSpec(
        name="square", version={"value": version}, signature_name="serving_default"
    )
    if label:
        spec = model_pb2.ModelSpec(name="square", version_label=label)
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[
            tensor_shape_pb2.TensorShapeProto.Dim(size=count),
            tensor_shape_pb2.TensorShapeProto.Dim(size=1),
        ]
    )
    output = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=y.tolist()
    )
    expected = predict_pb2.PredictResponse(
        model_spec=spec, outputs={"output_0": output}
    ).SerializeToString()
    assert tf_serving.encode_predict_response(y, spec.SerializeToString()) == expected
