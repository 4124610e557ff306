"""The training core: the article's network fitted fast, exported, measured and published.

Importing this package is cheap (no TensorFlow): the job runner and the web app use the
report types; only ``train_and_publish`` pulls TensorFlow in, inside the job's child process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from squarenet.store import ModelStore
from trainer_service.training.reports import (
    EpochReport,
    TrainingCancelled,
    TrainingDiverged,
    TrainingOutcome,
)

if TYPE_CHECKING:
    from trainer_service.params import TrainingParams
    from trainer_service.training.checkpoint import Checkpoint, TrainingState

__all__ = [
    "EpochReport",
    "TrainingCancelled",
    "TrainingDiverged",
    "TrainingOutcome",
    "train_and_publish",
]


def _never_report(report: EpochReport) -> None:
    """Default ``on_epoch``: progress goes nowhere."""


def _nothing() -> None:
    """Default ``before_publish``: publish without a last check."""


def _never_stop() -> bool:
    """Default ``should_stop``: run every planned epoch."""
    return False


def train_and_publish(
    params: TrainingParams,
    store: ModelStore,
    *,
    job_id: str,
    artifacts_dir: Path,
    on_epoch: Callable[[EpochReport], None] = _never_report,
    should_stop: Callable[[], bool] = _never_stop,
    staging: Path | None = None,
    before_publish: Callable[[], None] = _nothing,
    checkpoint: Checkpoint | None = None,
    resume: TrainingState | None = None,
) -> TrainingOutcome:
    """Train the article's network, export SavedModel + model.tflite, publish a version.

    Writes loss.png and fit.png into ``artifacts_dir``. Raises TrainingCancelled (leaving no
    version and no staging folder) when ``should_stop`` returns True between epochs, and
    TrainingDiverged when the loss stops being finite. ``staging`` is the folder the version
    is written into before it is published (a new hidden one in the model's folder if None);
    ``before_publish`` may raise to stop the publishing at the last moment. ``checkpoint``
    saves the training state as epochs go by; ``resume`` (a state it saved) goes on from it.
    """
    # TensorFlow's C++ INFO and WARNING lines would interleave with the job's one-line
    # events; a caller that wants them sets TF_CPP_MIN_LOG_LEVEL itself.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # Imported here so that importing this package does not load TensorFlow.
    from trainer_service.training.pipeline import run_training  # noqa: PLC0415

    return run_training(
        params,
        store,
        job_id=job_id,
        artifacts_dir=artifacts_dir,
        on_epoch=on_epoch,
        should_stop=should_stop,
        staging=staging,
        before_publish=before_publish,
        checkpoint=checkpoint,
        resume=resume,
    )
