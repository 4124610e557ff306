"""The model as KServe's Python model server serves it: a ``kserve.Model`` running the .tflite.

Written the way KServe's docs show a custom predictor (``load``, ``predict`` on the V2
``InferRequest``, ``ModelServer().start``). Runs only in .venv-kserve
(``scripts/client-venv.sh kserve``):

    python kserve_model.py --model_path model.tflite --http_port P --grpc_port Q
"""

from __future__ import annotations

import argparse

import kserve
import numpy as np
from ai_edge_litert.interpreter import Interpreter
from kserve import InferOutput, InferRequest, InferResponse


class SquareModel(kserve.Model):  # type: ignore[misc]
    """y ≈ x² from a .tflite file."""

    def __init__(self, name: str, model_path: str) -> None:
        super().__init__(name)
        self._model_path = model_path
        self.load()

    def load(self) -> None:
        self._interpreter = Interpreter(model_path=self._model_path, num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._rows = 1
        self.ready = True

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        x = payload.inputs[0].as_numpy().astype(np.float32).reshape(-1, 1)
        if len(x) != self._rows:
            self._interpreter.resize_tensor_input(self._input, [len(x), 1])
            self._interpreter.allocate_tensors()
            self._rows = len(x)
        self._interpreter.set_tensor(self._input, x)
        self._interpreter.invoke()
        y = self._interpreter.get_tensor(self._output)
        output = InferOutput(name="y", shape=list(y.shape), datatype="FP32", data=y)
        return InferResponse(model_name=self.name, infer_outputs=[output], response_id=payload.id)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_path", required=True)
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([SquareModel("square", args.model_path)])
