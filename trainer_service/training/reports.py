"""What training tells its caller: per-epoch progress, the outcome, and why it stopped short."""

from __future__ import annotations

from dataclasses import dataclass

from squarenet.store import ModelVersion


@dataclass(frozen=True)
class EpochReport:
    """One finished epoch, as the job's progress and event stream show it."""

    epoch: int
    """1-based."""
    epochs: int
    """The planned total (params.epochs); fewer run when early stopping ends training."""
    loss: float
    """Training MSE of that epoch: the mean over its batches, weighted by batch rows (as Keras)."""
    val_loss: float | None
    """MSE on the held-out rows after the epoch; None when validation_split == 0."""


@dataclass(frozen=True)
class TrainingOutcome:
    """The published version and the figures recorded in its metadata."""

    version: ModelVersion
    metrics: dict[str, float]
    """loss, val_loss (if any), mse_in_domain, mse_out_of_domain, train_seconds."""


class TrainingCancelled(Exception):
    """``should_stop`` asked training to end; nothing was published."""


class TrainingDiverged(Exception):
    """The loss became NaN or infinite (learning rate too high for the data's scale)."""
