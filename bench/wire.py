"""The bulk paths in-process: request bytes to NumPy and NumPy to response bytes, against protobuf.

For each protocol the hand path (``predictor_service.views``: values viewed in place,
answers joined from the arrays) and the plain protobuf path (parse the message, copy the
values into an array; build the response message and serialize it) run on the same bytes,
alternating, in one process: no server, no network, so the figure is the cost the wire
format adds to a call and nothing else. Ratios < 1 mean the hand path is cheaper.

    python bench/wire.py           # the table
    python bench/wire.py --quick   # fewer repeats
    python bench/wire.py --json    # also one JSON line per figure
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np
from rich.console import Console
from serving import Figure, render, spread

from predictor_service import encoding, open_inference, tf_serving
from squarenet.third_party.open_inference import dataplane_pb2 as v2
from squarenet.third_party.tensorflow.core.framework import (
    tensor_pb2,
    tensor_shape_pb2,
    types_pb2,
)
from squarenet.third_party.tensorflow_serving.apis import model_pb2, predict_pb2
from squarenet.v1 import predictor_pb2

Pair = tuple[Callable[[], Any], Callable[[], Any]]
"""(hand path, protobuf path) for one round trip."""


def own(values: int) -> Pair:
    """squarenet's Predict: decode x, encode y, version, flags."""
    data = predictor_pb2.PredictRequest(x=np.linspace(-1, 1, values).tolist()).SerializeToString()
    y = np.linspace(0, 1, values, dtype=np.float32)
    flags = y > 0.5

    def hand() -> bytes:
        np.asarray(encoding.decode_request(data).x, dtype=np.float64)
        return encoding.encode_response(y, 3, flags)

    def protobuf() -> bytes:
        np.array(predictor_pb2.PredictRequest.FromString(data).x, dtype=np.float64)
        response = predictor_pb2.PredictResponse(
            y=y.tolist(), version=3, extrapolated=flags.tolist()
        )
        return bytes(response.SerializeToString())

    return hand, protobuf


def open_inference_raw(values: int) -> Pair:
    """V2 ModelInfer, FP32 raw_input_contents in, raw outputs out."""
    tensor = v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[values, 1])
    x = np.linspace(-1, 1, values, dtype="<f4")
    data = v2.ModelInferRequest(
        model_name="square", inputs=[tensor], raw_input_contents=[x.tobytes()]
    ).SerializeToString()
    outputs = [("y", "FP32", [values, 1], x), ("extrapolated", "BOOL", [values, 1], x > 0.5)]

    def hand() -> bytes:
        np.frombuffer(open_inference.decode_infer(data).raw[0], dtype="<f4")
        return open_inference.encode_infer_response("square", "3", "", outputs)

    def protobuf() -> bytes:
        np.frombuffer(v2.ModelInferRequest.FromString(data).raw_input_contents[0], dtype="<f4")
        output = v2.ModelInferResponse.InferOutputTensor
        response = v2.ModelInferResponse(
            model_name="square",
            model_version="3",
            outputs=[output(name=n, datatype=d, shape=s) for n, d, s, _ in outputs],
            raw_output_contents=[array.tobytes() for *_, array in outputs],
        )
        return bytes(response.SerializeToString())

    return hand, protobuf


def tensorflow_serving(values: int) -> Pair:
    """TF Serving Predict, DT_FLOAT tensor_content in, float_val out."""
    x = np.linspace(-1, 1, values, dtype="<f4")
    dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in (values, 1)]
    shape = tensor_shape_pb2.TensorShapeProto(dim=dims)
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_FLOAT, tensor_shape=shape, tensor_content=x.tobytes()
    )
    spec = model_pb2.ModelSpec(name="square", version={"value": 3})
    data = predict_pb2.PredictRequest(model_spec=spec, inputs={"x": tensor}).SerializeToString()
    spec_bytes = spec.SerializeToString()

    def hand() -> bytes:
        call = tf_serving.decode_predict(data)
        content = call.bulk[1] if call.bulk else call.message.inputs["x"].tensor_content
        np.frombuffer(content, dtype="<f4")
        return tf_serving.encode_predict_response(x, spec_bytes)

    def protobuf() -> bytes:
        request = predict_pb2.PredictRequest.FromString(data)
        np.frombuffer(request.inputs["x"].tensor_content, dtype="<f4")
        output = tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape=shape, float_val=x.tolist()
        )
        response = predict_pb2.PredictResponse(model_spec=spec, outputs={"output_0": output})
        return bytes(response.SerializeToString())

    return hand, protobuf


CASES: dict[str, Callable[[int], Pair]] = {
    "own Predict": own,
    "V2 raw contents": open_inference_raw,
    "TF Serving tensor_content": tensorflow_serving,
}


def microseconds(call: Callable[[], Any], number: int) -> float:
    """Best-of-three µs per call of ``call`` (the least disturbed by the machine)."""
    return min(timeit.repeat(call, number=number, repeat=3)) / number * 1e6


def measure(quick: bool) -> list[Figure]:
    """Each protocol at 1, 1,000 and 65,536 values: hand against protobuf, alternating rounds."""
    rounds = 3 if quick else 7
    figures = []
    for name, case in CASES.items():
        for values in (1, 1000, 65536):
            hand, protobuf = case(values)
            if hand() != protobuf():  # not the same bytes: the comparison would mean nothing
                raise RuntimeError(f"{name}: the hand path and protobuf disagree")
            number = (2000 if quick else 10000) // (1 if values < 65536 else 1000)
            times: dict[str, list[float]] = {"hand": [], "protobuf": []}
            for _ in range(rounds):
                times["hand"].append(microseconds(hand, number))
                times["protobuf"].append(microseconds(protobuf, number))
            figures.append(
                Figure(
                    f"wire: {name}, {values:,} value{'s' if values > 1 else ''}, decode + encode",
                    statistics.median(times["hand"]),
                    "µs",
                    statistics.median(times["protobuf"]),
                    "protobuf messages",
                    "report",
                    None,
                    spread(times["hand"]),
                    spread(times["protobuf"]),
                )
            )
    return figures


def main(argv: list[str] | None = None) -> int:
    """Print the table (and JSON lines with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    args = parser.parse_args(argv)
    render(measure(args.quick), Console(width=170), args.json, bench="wire")
    return 0


if __name__ == "__main__":
    sys.exit(main())
