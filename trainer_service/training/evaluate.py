"""How good a model is, measured on the exported artifact rather than the training graph.

Inside the domain the network interpolates; outside it a ReLU network can only continue
its outermost linear pieces, so the error there grows with |x|. Both are reported so
every version says how far it can be trusted.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from trainer_service.training.data import TrainingData, in_domain_grid, out_of_domain_grid, target
from trainer_service.training.export import Predict


def mean_squared_error(predict: Predict, x: npt.ArrayLike, y: npt.ArrayLike | None = None) -> float:
    """MSE of ``predict`` over the points ``x`` against ``y`` (None: x² in float64, exact)."""
    points = np.asarray(x, dtype=np.float64).reshape(-1)
    truth = target(points) if y is None else np.asarray(y, dtype=np.float64).reshape(-1)
    return float(np.mean(np.square(predict(points) - truth)))


def model_metrics(
    predict: Predict, data: TrainingData, domain: tuple[float, float]
) -> dict[str, float]:
    """loss and val_loss (final weights, all rows), mse_in_domain and mse_out_of_domain.

    ``loss`` and ``val_loss`` are the MSE of the published weights on the training and
    held-out rows, not the running mean of the last epoch's batches.
    """
    metrics = {"loss": mean_squared_error(predict, data.x_train, data.y_train)}
    if data.has_validation:
        metrics["val_loss"] = mean_squared_error(predict, data.x_val, data.y_val)
    metrics["mse_in_domain"] = mean_squared_error(predict, in_domain_grid(domain))
    metrics["mse_out_of_domain"] = mean_squared_error(predict, out_of_domain_grid(domain))
    return metrics
