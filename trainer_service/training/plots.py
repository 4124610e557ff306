"""The article's two figures: the loss curve, and the fit inside and outside the domain.

Drawn on a bare ``Figure`` (``savefig`` renders PNG with Agg): no pyplot state, no display,
safe in a job's child process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from trainer_service.training.data import TrainingData, target
from trainer_service.training.export import Predict
from trainer_service.training.reports import EpochReport

LOSS_PLOT = "loss.png"
FIT_PLOT = "fit.png"
DATA_POINTS_SHOWN = 1_000
"""Training rows drawn in fit.png: enough to show the sampling, few enough to see the curves."""


def _axes() -> tuple[Figure, Axes]:
    """A 700×450 px figure with fixed margins (a layout engine would cost more than drawing)."""
    figure = Figure(figsize=(7, 4.5))
    figure.subplots_adjust(left=0.11, right=0.97, top=0.92, bottom=0.11)
    return figure, figure.add_subplot()


def plot_loss(history: Sequence[EpochReport], path: Path) -> None:
    """loss and val_loss per epoch on a log scale (the article's training curve)."""
    figure, axes = _axes()
    epochs = [report.epoch for report in history]
    axes.plot(epochs, [report.loss for report in history], label="loss (training)")
    val_losses = [report.val_loss for report in history]
    if any(value is not None for value in val_losses):
        axes.plot(epochs, [np.nan if v is None else v for v in val_losses], label="val_loss")
    axes.set(yscale="log", xlabel="epoch", ylabel="mean squared error", title="Training loss")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=100)


def plot_fit(
    predict: Predict,
    data: TrainingData,
    domain: tuple[float, float],
    path: Path,
    rng: np.random.Generator,
) -> None:
    """Data, x² and the prediction over twice the domain, the domain shaded.

    The picture shows the article's lesson: the prediction follows x² inside the shaded
    interval and continues as straight lines outside it.
    """
    lo, hi = domain
    reach = hi - lo
    x = np.linspace(lo - reach / 2, hi + reach / 2, 801)
    shown = min(DATA_POINTS_SHOWN, len(data.x_train))
    rows = rng.choice(len(data.x_train), size=shown, replace=False)
    figure, axes = _axes()
    axes.axvspan(lo, hi, color="tab:green", alpha=0.08, label="training domain")
    axes.scatter(
        data.x_train[rows, 0], data.y_train[rows, 0], s=4, color="tab:gray", label="training data"
    )
    axes.plot(x, target(x), color="tab:blue", label="x²")
    axes.plot(x, predict(x), color="tab:orange", linestyle="--", label="prediction")
    axes.set(xlabel="x", ylabel="y")
    axes.set_title("Interpolation inside the domain, linear extrapolation outside")
    axes.legend(loc="upper center")
    figure.savefig(path, dpi=100)
