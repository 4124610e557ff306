"""The article's data: x drawn uniformly over the training domain, y = x².

Rows are split like Keras' ``validation_split``: the last fraction is held out, before any
shuffling, so a plain ``model.fit`` on the same arrays sees exactly the same split.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trainer_service.params import TrainingParams

Array = npt.NDArray[np.float32]

GRID_POINTS = 10_001
"""Points of the dense evaluation grid inside the domain (and on each side outside it)."""


@dataclass(frozen=True)
class TrainingData:
    """Training and validation rows, float32 columns of shape [rows, 1]."""

    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array

    @property
    def has_validation(self) -> bool:
        """Whether any row was held out (validation_split > 0)."""
        return len(self.x_val) > 0


def target(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """What the network learns: y = x², in float64 so metrics are exact references."""
    return np.square(np.asarray(x, dtype=np.float64))


def make_data(params: TrainingParams, rng: np.random.Generator) -> TrainingData:
    """Draw ``n_samples`` rows of X ~ U(-mid_range/2, mid_range/2), y = X², and split them."""
    lo, hi = params.domain
    x = rng.uniform(lo, hi, size=(params.n_samples, 1)).astype(np.float32)
    y = np.square(x, dtype=np.float32)
    n_train = params.n_train
    return TrainingData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])


def in_domain_grid(domain: tuple[float, float]) -> npt.NDArray[np.float64]:
    """A dense, evenly spaced grid over the closed training interval [lo, hi]."""
    return np.linspace(*domain, GRID_POINTS)


def out_of_domain_grid(domain: tuple[float, float]) -> npt.NDArray[np.float64]:
    """A dense grid over the band outside the domain, up to twice its reach.

    For the symmetric domain [-h, h] that is h < |x| <= 2h: where the article shows the
    network extrapolating linearly, away from x².
    """
    lo, hi = domain
    reach = (hi - lo) / 2
    right = np.linspace(hi, hi + reach, GRID_POINTS)[1:]
    left = np.linspace(lo - reach, lo, GRID_POINTS)[:-1]
    return np.concatenate([left, right])
