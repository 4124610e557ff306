"""Helpers of the sweep tests (import as ``sweeps.sweep_support``).

``StandInRunner`` plays the job runner's part on the real job book: it starts QUEUED jobs and
ends them through the book's own ``start`` and ``finish`` (after writing what a job process
writes: its progress lines and, on success, a published version), so the controller meets
the same records a real runner leaves, without training anything. It is the one place that
knows the runner's interface.
"""

from __future__ import annotations

import json
from typing import Any

from squarenet.store import SAVED_MODEL_FILE, TFLITE_FILE
from trainer_service.lifecycle import EndReason, RunState
from trainer_service.runner.book import CANCELLED, EXITED, Ending, Job, JobBook

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
    """Starts and ends jobs the way the job runner records them."""

    def __init__(self, book: JobBook) -> None:
        self.book = book
        self.store = book.store

    def claim(self) -> Job:
        """Start the oldest QUEUED job (RUNNING now); fail the test when there is none."""
        for job in self.book.unfinished():
            if job.state is RunState.QUEUED:
                started = self.book.start(job.id)
                assert started is not None
                return started
        raise AssertionError("no QUEUED job to start")

    def _report(self, job: Job, *rows: dict[str, Any]) -> None:
        path = self.book.files.progress_path(job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as progress:
            progress.writelines(json.dumps(row) + "\n" for row in rows)

    def report_epochs(self, job: Job, losses: list[float], first: int = 1) -> None:
        """Progress lines of epochs ``first``, ``first + 1``, ... with these training losses."""
        rows = [
            {"epoch": first + i, "loss": loss, "val_loss": None} for i, loss in enumerate(losses)
        ]
        self._report(job, *rows)

    def succeed(self, job: Job, mse_in_domain: float, *, epochs_reported: bool = False) -> int:
        """Publish a placeholder version as the job and end it SUCCEEDED (reporting two epochs
        unless ``epochs_reported``)."""
        model_name = job.params.model_name
        staging = self.store.staging_dir(model_name, tag="standin")
        (staging / SAVED_MODEL_FILE).write_bytes(b"saved model placeholder")
        (staging / TFLITE_FILE).write_bytes(b"tflite placeholder")
        metrics = {"loss": mse_in_domain, "mse_in_domain": mse_in_domain,
                   "mse_out_of_domain": 100 * mse_in_domain}  # fmt: skip
        version = self.store.publish_version(
            staging,
            {"domain": list(job.params.domain), "job_id": job.id, "metrics": metrics},
            model_name,
        ).version
        epochs = [
            {"epoch": 1, "loss": 2 * mse_in_domain, "val_loss": None},
            {"epoch": 2, "loss": mse_in_domain, "val_loss": None},
        ]
        self._report(
            job,
            *([] if epochs_reported else epochs),
            {"result": "succeeded", "version": version, "metrics": metrics},
        )
        ended = self.book.finish(job.id, EXITED)
        assert ended is not None and ended.state is RunState.SUCCEEDED
        return version

    def fail(
        self, job: Job, error: str = "training diverged", end: EndReason = EndReason.ERROR
    ) -> None:
        """End the job FAILED with ``error`` (as a lost, killed or interrupted job ends)."""
        ended = self.book.finish(job.id, Ending("failed", error, end))
        assert ended is not None and ended.state is RunState.FAILED

    def confirm_cancel(self, job: Job) -> None:
        """What a runner does when it finds a cancel request for its job."""
        assert self.book.cancel_requested(job.id)
        self.book.finish(job.id, CANCELLED)
