"""A job stopped after a checkpoint and resumed from it ends as if it had never stopped.

In one process: the first run is stopped (``should_stop``) once a checkpoint has been saved;
the second resumes from what it saved; a third runs uninterrupted with the same seed. The
resumed run trains only the epochs after the checkpoint, and its weights are the
uninterrupted run's: same arithmetic, same batch orders, same optimizer state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.training import EpochReport, TrainingCancelled, train_and_publish
from trainer_service.training.checkpoint import Checkpoint

pytestmark = pytest.mark.slow


def params(**more: Any) -> TrainingParams:
    base = {"n_samples": 400, "epochs": 30, "batch_size": 10, "mid_range": 4.0, "seed": 11}
    return TrainingParams.model_validate({**base, **more})


def train(
    store: ModelStore, folder: Path, job: TrainingParams, checkpoint: Checkpoint | None = None
) -> tuple[list[EpochReport], Any]:
    epochs: list[EpochReport] = []
    outcome = train_and_publish(
        job,
        store,
        job_id=folder.name,
        artifacts_dir=folder,
        on_epoch=epochs.append,
        checkpoint=checkpoint,
        resume=checkpoint.load() if checkpoint is not None else None,
    )
    return epochs, outcome


def stopped_after_a_save(store: ModelStore, folder: Path, job: TrainingParams) -> int:
    """Train with a checkpoint saved after every epoch; stop once epoch 12 was saved."""
    checkpoint = Checkpoint(folder / "checkpoint.npz", every=0.0)
    epochs: list[EpochReport] = []
    with pytest.raises(TrainingCancelled):
        train_and_publish(
            job,
            store,
            job_id="first",
            artifacts_dir=folder,
            on_epoch=epochs.append,
            should_stop=lambda: len(epochs) >= 12,
            checkpoint=checkpoint,
        )
    saved = checkpoint.load()
    assert saved is not None
    return saved.epoch


@pytest.mark.parametrize("early_stopping", [None, 50], ids=["plain", "early-stopping"])
def test_a_resumed_job_trains_the_rest_and_ends_as_an_uninterrupted_one(
    tmp_path: Path, early_stopping: int | None
) -> None:
    job = params(early_stopping_patience=early_stopping)
    store = ModelStore(tmp_path / "store")
    folder = tmp_path / "job"
    saved_epoch = stopped_after_a_save(store, folder, job)
    assert saved_epoch == 12
    assert store.list_versions() == []

    resumed, outcome = train(store, folder, job, Checkpoint(folder / "checkpoint.npz"))
    assert [report.epoch for report in resumed] == list(range(13, job.epochs + 1))

    uninterrupted, reference = train(store, tmp_path / "reference", job)
    assert [report.epoch for report in uninterrupted] == list(range(1, job.epochs + 1))
    assert [r.loss for r in resumed] == pytest.approx(
        [r.loss for r in uninterrupted[12:]], rel=1e-5
    )
    for name in ("loss", "mse_in_domain", "mse_out_of_domain"):
        assert outcome.metrics[name] == pytest.approx(reference.metrics[name], rel=1e-5)
    gradient_steps = [
        store.verify_version("square", version).metadata["training"]["gradient_steps"]
        for version in (outcome.version.version, reference.version.version)
    ]
    assert gradient_steps[0] == gradient_steps[1]  # Adam's step count went on, not over


def test_a_checkpoint_that_cannot_be_read_means_starting_over(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.npz"
    assert Checkpoint(path).load() is None  # none yet
    path.write_bytes(b"half a zip file")
    assert Checkpoint(path).load() is None


def test_saving_replaces_the_file_in_one_rename(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.npz"
    job = params(epochs=3)
    store = ModelStore(tmp_path / "store")
    checkpoint = Checkpoint(path, every=0.0)
    train(store, tmp_path / "job", job, checkpoint)
    saved = Checkpoint(path).load()
    assert saved is not None and saved.epoch == 3
    assert np.isfinite(saved.weights[0]).all()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
