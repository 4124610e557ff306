"""The model as MLServer serves it: a custom ``MLModel`` running the same .tflite with LiteRT.

Written the way MLServer's docs show a custom runtime (``load`` and ``predict``, NumPy codec).
Runs only in .venv-mlserver (``scripts/client-venv.sh mlserver``); the serving benchmark
writes the model-settings.json that points MLServer at this class and at the .tflite file.
"""

from __future__ import annotations

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class SquareModel(MLModel):  # type: ignore[misc]
    """y ≈ x² from the .tflite named by the model settings' ``parameters.uri``."""

    async def load(self) -> bool:
        self._interpreter = Interpreter(model_path=self.settings.parameters.uri, num_threads=1)
        self._interpreter.allocate_tensors()
        self._input = self._interpreter.get_input_details()[0]["index"]
        self._output = self._interpreter.get_output_details()[0]["index"]
        self._rows = 1
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32).reshape(-1, 1)
        if len(x) != self._rows:
            self._interpreter.resize_tensor_input(self._input, [len(x), 1])
            self._interpreter.allocate_tensors()
            self._rows = len(x)
        self._interpreter.set_tensor(self._input, x)
        self._interpreter.invoke()
        y = self._interpreter.get_tensor(self._output)
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output(name="y", payload=y)]
        )
