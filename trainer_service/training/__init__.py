"""The training core: the article's network fitted fast, exported, measured and published.

Importing this package is cheap (no TensorFlow): the job runner and the web app use the
report types; only ``train_and_publish`` pulls TensorFlow in, inside the job's child process.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Required, TypedDict, Unpack

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


class TrainingOptions(TypedDict, total=False):
    """The keywords of ``train_and_publish``."""

    job_id: Required[str]
    artifacts_dir: Required[Path]
    on_epoch: Callable[[EpochReport], None]
    should_stop: Callable[[], bool]
    staging: Path | None
    before_publish: Callable[[], None]
    checkpoint: Checkpoint | None
    resume: TrainingState | None


def train_and_publish(
    params: TrainingParams, store: ModelStore, **options: Unpack[TrainingOptions]
) -> TrainingOutcome:
    """Train the article's network, export SavedModel + model.tflite, publish a version.

    Writes loss.png, fit.png and fit.json into ``artifacts_dir``. ``on_epoch`` hears of every
    epoch. Raises TrainingCancelled (leaving no version and no staging folder) when
    ``should_stop`` returns True between epochs, and TrainingDiverged when the loss stops being
    finite. ``staging`` is the folder the version is written into before it is published (a
    new hidden one in the model's folder if None); ``before_publish`` may raise to stop the
    publishing at the last moment. ``checkpoint`` saves the training state as epochs go by;
    ``resume`` (a state it saved) goes on from it.
    """
    # TensorFlow's C++ INFO and WARNING lines would interleave with the job's one-line
    # events; a caller that wants them sets TF_CPP_MIN_LOG_LEVEL itself.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from trainer_service.training.pipeline import run_training  # noqa: PLC0415 - loads TensorFlow

    return run_training(params, store, **options)
