"""Domain errors of the trainer, each naming in its class line the HTTP answer it stands for.

The API's one problem handler reads ``status`` and ``kind`` (and ``retry``: the refusal
passes, so the answer carries ``Retry-After``) off any of them; no HTTP is spoken here. They
carry what a client needs to understand the refusal (the queue's limit, the job as it ended).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer_service.runner.records import Job


class TrainerError(Exception):
    """Something a client asked for that the trainer refuses, for a reason it can name."""

    status = 400
    kind = "trainer-error"
    retry = False

    def __init_subclass__(
        cls, *, status: int | None = None, kind: str | None = None, retry: bool = False
    ) -> None:
        super().__init_subclass__()
        if status is not None and kind is not None:
            cls.status, cls.kind, cls.retry = status, kind, retry


class JobNotFound(TrainerError, status=404, kind="not-found"):
    """No job has this id (ids that are not even well formed end here too)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class QueueFull(TrainerError, status=429, kind="queue-full", retry=True):
    """Too many jobs are waiting already; the client should retry later."""

    problem = "the job queue is full ({} jobs waiting); retry later"

    def __init__(self, limit: int) -> None:
        super().__init__(self.problem.format(limit))
        self.limit = limit


class TooManyJobs(QueueFull):
    """Every Kubernetes Job slot (``--max-concurrent-jobs``) is held by a queued or running job."""

    problem = (
        "{} training jobs are queued or running on the cluster already (max_concurrent_jobs); "
        "retry later"
    )


class JobAlreadyFinished(TrainerError, status=409, kind="job-already-finished"):
    """A cancel arrived for a job that has already ended (it keeps its final state)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} has already finished: {job.state}")
        self.job = job


class PlotNotFound(TrainerError, status=404, kind="not-found"):
    """The job has no such figure, or has not drawn it yet."""

    def __init__(self, job_id: str, name: str) -> None:
        super().__init__(f"job {job_id} has no plot {name!r} (yet)")
        self.job_id = job_id
        self.name = name


class ExecutorUnavailable(TrainerError, status=503, kind="executor-unavailable", retry=True):
    """The executor cannot run jobs now (the cluster refused or is unreachable)."""
