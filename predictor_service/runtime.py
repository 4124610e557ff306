"""Runtimes that turn x into y: LiteRT on model.tflite (default) or TensorFlow on the SavedModel.

Both sit behind :class:`Runtime` so the rest of the predictor never knows which one runs.
TensorFlow is imported only inside :class:`TensorFlowRuntime`: a LiteRT predictor never pays
its import time or memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

Vector = NDArray[np.float32]
#: A call's values: a short Python list, or a NumPy array for large batches.
Values = Sequence[float] | NDArray[np.float64]


class ModelLoadError(Exception):
    """A model could not be loaded or run; the message is for logs, never for clients."""


class Runtime(Protocol):
    """A loaded model: maps n values of x to a float32 vector of n values of y."""

    name: str

    def predict(self, x: Values) -> Vector:
        """Predict y for every x; safe to call from many threads at once."""
        ...


class LiteRTRuntime:
    """model.tflite under LiteRT, one interpreter per concurrent call.

    Interpreters are not thread-safe, but cheap (about 60 µs to build): calls borrow one
    from a lock-free pool and give it back, so the pool grows to the peak concurrency and
    no call waits for another. The pool is a stack (``deque.pop``/``append`` are atomic):
    the interpreter used last, whose memory is still in cache, is the one lent next. The input tensor is resized when a call's batch size differs
    from the interpreter's last one (a few µs), so every batch is one ``invoke``.
    """

    name = "litert"

    def __init__(self, model_content: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (per runtime)

        self._interpreter_class = Interpreter
        self._model_content = model_content
        self._idle: deque[_Slot] = deque()
        self._idle.append(self._new_slot())  # fails here, at load time, if unusable

    def _new_slot(self) -> _Slot:
        try:
            interpreter = self._interpreter_class(model_content=self._model_content, num_threads=1)
            interpreter.allocate_tensors()
            inputs = interpreter.get_input_details()
            outputs = interpreter.get_output_details()
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"LiteRT cannot load the model: {exc}") from exc
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelLoadError(
                f"expected one input and one output, found {len(inputs)} and {len(outputs)}"
            )
        return _Slot(interpreter, int(inputs[0]["index"]), int(outputs[0]["index"]))

    def predict(self, x: Values) -> Vector:
        """One ``invoke`` for the whole batch on a borrowed interpreter."""
        try:
            slot = self._idle.pop()
        except IndexError:
            slot = self._new_slot()
        try:
            return slot.run(x)
        finally:
            self._idle.append(slot)


class _Slot:
    """One interpreter and the batch size its input tensor currently has."""

    __slots__ = ("input_index", "interpreter", "output_index", "rows", "single")

    def __init__(self, interpreter: Any, input_index: int, output_index: int) -> None:
        self.interpreter = interpreter
        self.input_index = input_index
        self.output_index = output_index
        self.rows = 1
        self.single = np.zeros((1, 1), dtype=np.float32)  # reused: one-value calls are common

    def run(self, x: Values) -> Vector:
        interpreter = self.interpreter
        rows = len(x)
        if rows != self.rows:
            interpreter.resize_tensor_input(self.input_index, [rows, 1])
            interpreter.allocate_tensors()
            self.rows = rows
        if rows == 1:
            self.single[0, 0] = x[0]
            interpreter.set_tensor(self.input_index, self.single)
        else:
            interpreter.set_tensor(self.input_index, np.array(x, dtype=np.float32).reshape(rows, 1))
        interpreter.invoke()
        result: Vector = interpreter.get_tensor(self.output_index).ravel()
        return result


class TensorFlowRuntime:
    """The SavedModel's ``serving_default`` signature, called under TensorFlow."""

    name = "tensorflow"

    def __init__(self, saved_model_dir: Path) -> None:
        import tensorflow as tf  # noqa: PLC0415 (only with --runtime tensorflow)

        self._tf = tf
        try:
            loaded = tf.saved_model.load(str(saved_model_dir))
            self._signature = loaded.signatures["serving_default"]
        except (OSError, KeyError, ValueError, tf.errors.OpError) as exc:
            raise ModelLoadError(f"TensorFlow cannot load the SavedModel: {exc}") from exc
        self._loaded = loaded  # keeps the variables the signature reads alive
        outputs = list(self._signature.structured_outputs)
        if len(outputs) != 1:
            raise ModelLoadError(f"expected one output in serving_default, found {outputs}")
        self._output_name = outputs[0]

    def predict(self, x: Values) -> Vector:
        """Call the signature with a [n, 1] float32 tensor."""
        tensor = self._tf.constant(np.array(x, dtype=np.float32).reshape(-1, 1))
        result = self._signature(tensor)[self._output_name]
        values: Vector = result.numpy().reshape(-1).astype(np.float32, copy=False)
        return values


def load_runtime(kind: str, version_dir: Path, tflite_content: bytes) -> Runtime:
    """Build the runtime ``kind`` for a verified version folder."""
    if kind == "litert":
        return LiteRTRuntime(tflite_content)
    if kind == "tensorflow":
        return TensorFlowRuntime(version_dir)
    raise ModelLoadError(f"unknown runtime {kind!r}")
