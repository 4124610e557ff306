"""Writing a trained model in the two forms the store holds, and reading it back.

The SavedModel (Keras ``model.export``) is what TensorFlow Serving loads: signature
``serving_default``, float32 [None, 1] -> [None, 1]. ``model.tflite`` is converted from
that same SavedModel, so both runtimes serve one set of weights.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from squarenet.store import TFLITE_FILE

SERVING_SIGNATURE = "serving_default"
PREDICT_CHUNK = 16_384
"""Rows per call when measuring: bounds the hidden activations (rows × num_neurons floats)."""

Predict = Callable[[npt.ArrayLike], npt.NDArray[np.float64]]


def export_model(model: Any, folder: Path) -> None:
    """Write ``saved_model.pb``, ``variables/`` and ``model.tflite`` into ``folder``."""
    model.export(str(folder), format="tf_saved_model", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
    (folder / TFLITE_FILE).write_bytes(converter.convert())


def load_saved_model(folder: Path) -> Predict:
    """The exported serving signature as a numpy function (x in, y out, any 1-D shape)."""
    signature = tf.saved_model.load(str(folder)).signatures[SERVING_SIGNATURE]

    def predict(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
        column = np.asarray(x, dtype=np.float32).reshape(-1, 1)
        outputs = []
        for start in range(0, len(column), PREDICT_CHUNK):
            (output,) = signature(tf.constant(column[start : start + PREDICT_CHUNK])).values()
            outputs.append(np.asarray(output.numpy(), dtype=np.float64).reshape(-1))
        return np.concatenate(outputs) if outputs else np.empty(0)

    return predict
