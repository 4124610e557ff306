"""The article's network, Dense(num_neurons, relu) -> Dense(1), and how it starts.

A 1-hidden-layer ReLU network computes a continuous piecewise-linear function whose kinks
sit at x = -b/w of each hidden unit. How well it can fit x² depends on where those kinks
end up; the best fit with n kinks places them evenly over the domain. Keras' default
start (``glorot``) leaves them clustered near 0 or outside the data (dead units), which is
why the article's run stalls at an in-domain MSE of 0.013-0.058 depending on the seed.
``spread`` starts every kink where it is needed instead.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import numpy.typing as npt

from trainer_service.params import InitScheme, TrainingParams

Weights = list[npt.NDArray[np.float32]]

KINK_JITTER = 0.25
"""How far (in kink spacings) ``spread`` moves each kink at random, so seeds differ."""


def build_model(params: TrainingParams, rng: np.random.Generator) -> Any:
    """The article's Sequential model with weights drawn by ``params.init`` from ``rng``."""
    model = keras.Sequential(
        [
            keras.Input(shape=(1,), dtype="float32", name="x"),
            keras.layers.Dense(params.num_neurons, activation="relu", name="hidden"),
            keras.layers.Dense(1, name="y"),
        ],
        name="square",
    )
    model.set_weights(initial_weights(params.init, params.num_neurons, params.domain, rng))
    return model


def initial_weights(
    scheme: InitScheme, num_neurons: int, domain: tuple[float, float], rng: np.random.Generator
) -> Weights:
    """[hidden kernel (1, n), hidden bias (n,), output kernel (n, 1), output bias (1,)]."""
    if scheme == "glorot":
        return _glorot(num_neurons, rng)
    return _spread(num_neurons, domain, rng)


def _glorot_limit(num_neurons: int) -> float:
    """Glorot-uniform's bound for either kernel, [1, n] or [n, 1]: sqrt(6 / (n + 1))."""
    return float(np.sqrt(6.0 / (num_neurons + 1)))


def _glorot(num_neurons: int, rng: np.random.Generator) -> Weights:
    """Keras' default: Glorot-uniform kernels, zero biases (the article's network)."""
    limit = _glorot_limit(num_neurons)
    return _as_float32(
        rng.uniform(-limit, limit, (1, num_neurons)),
        np.zeros(num_neurons),
        rng.uniform(-limit, limit, (num_neurons, 1)),
        np.zeros(1),
    )


def _spread(num_neurons: int, domain: tuple[float, float], rng: np.random.Generator) -> Weights:
    """Kinks evenly over the domain, each unit facing away from its centre, convex start.

    The n kinks start at lo + j·(hi-lo)/(n+1), j = 1..n (the optimal places for x²), moved
    at random by up to a quarter spacing. A unit left of the centre is active to its left
    (w = -1), one right of it to its right (w = +1): every unit sees data, none starts
    dead, and each adds one hinge. Output weights start positive, so the initial function
    is convex like x²; Adam then only has to tune the slopes and nudge the kinks.
    """
    lo, hi = domain
    spacing = (hi - lo) / (num_neurons + 1)
    kinks = lo + spacing * np.arange(1, num_neurons + 1)
    kinks += rng.uniform(-KINK_JITTER, KINK_JITTER, num_neurons) * spacing
    facing = np.where(kinks < (lo + hi) / 2, -1.0, 1.0)
    return _as_float32(
        facing[np.newaxis, :],
        -facing * kinks,
        rng.uniform(0.0, _glorot_limit(num_neurons), (num_neurons, 1)),
        np.zeros(1),
    )


def _as_float32(*arrays: npt.ArrayLike) -> Weights:
    return [np.asarray(array, dtype=np.float32) for array in arrays]
