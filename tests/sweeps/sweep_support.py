"""Helpers of the sweep tests (import as ``sweeps.sweep_support``).

``StandInRunner`` plays the job runner's part on a real job book: it claims QUEUED jobs and
records their end through the runner's own book (``RunnerBook``), so the controller meets
the same records a real runner leaves, without training anything. It is the one place that
knows the runner's interface.
"""

from __future__ import annotations

from typing import Any

from squarenet.store import METADATA_FILE, SAVED_MODEL_FILE, TFLITE_FILE, ModelStore
from trainer_service.job_records import JobRecord, JobState
from trainer_service.leases import Runner, RunnerBook

GRID_2x2: dict[str, Any] = {
    "base": {"n_samples": 200, "epochs": 2, "batch_size": 20, "seed": 1},
    "parameters": [
        {"name": "num_neurons", "parameterType": "int", "feasibleSpace": {"list": [1, 4]}},
        {"name": "mid_range", "parameterType": "double",
         "feasibleSpace": {"min": 2, "max": 12, "step": 10}},
    ],
    "parallelTrialCount": 2,
}  # fmt: skip


class StandInRunner:
    """Claims and ends jobs the way the job runner records them."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self.book = RunnerBook(store, Runner.here())

    def claim(self) -> JobRecord:
        """Take the oldest QUEUED job (RUNNING now); fail the test when there is none."""
        record = self.book.claim_next()
        assert record is not None, "no QUEUED job to claim"
        return record

    def succeed(self, record: JobRecord, mse_in_domain: float) -> int:
        """Publish a placeholder version under the job's model and end the job SUCCEEDED."""
        model_name = record.params.model_name
        staging = self.store.staging_dir(model_name, tag="standin")
        (staging / SAVED_MODEL_FILE).write_bytes(b"saved model placeholder")
        (staging / TFLITE_FILE).write_bytes(b"tflite placeholder")
        metrics = {"loss": mse_in_domain, "mse_in_domain": mse_in_domain,
                   "mse_out_of_domain": 100 * mse_in_domain}  # fmt: skip
        version = self.store.publish_version(
            staging,
            {"domain": list(record.params.domain), "job_id": record.id, "metrics": metrics},
            model_name,
        ).version
        assert (self.store.version_dir(model_name, version) / METADATA_FILE).is_file()
        self.book.files.append_epochs(
            record.id,
            [{"epoch": 1, "loss": 2 * mse_in_domain, "val_loss": None},
             {"epoch": 2, "loss": mse_in_domain, "val_loss": None}],
        )  # fmt: skip
        self.book.finish(record.id, JobState.SUCCEEDED, metrics=metrics, model_version=version)
        return version

    def fail(self, record: JobRecord, error: str = "training diverged") -> None:
        """End the job FAILED with ``error``."""
        self.book.finish(record.id, JobState.FAILED, error=error)

    def confirm_cancel(self, record: JobRecord) -> None:
        """What a runner does when it finds a cancel request for its job."""
        assert self.book.cancel_requested(record.id)
        self.book.finish(record.id, JobState.CANCELLED)
