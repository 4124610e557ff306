"""Domain errors of the trainer; the REST layer maps each one to a problem response.

They carry what a client needs to understand the refusal (the queue's limit, the job as it
ended) so the transport never has to look anything up again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer_service.runner.records import Job


class TrainerError(Exception):
    """Something a client asked for that the trainer refuses, for a reason it can name."""


class JobNotFound(TrainerError):
    """No job has this id (ids that are not even well formed end here too)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class QueueFull(TrainerError):
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


class JobAlreadyFinished(TrainerError):
    """A cancel arrived for a job that has already ended (it keeps its final state)."""

    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} has already finished: {job.state}")
        self.job = job


class PlotNotFound(TrainerError):
    """The job has no such figure, or has not drawn it yet."""

    def __init__(self, job_id: str, name: str) -> None:
        super().__init__(f"job {job_id} has no plot {name!r} (yet)")
        self.job_id = job_id
        self.name = name


class ExecutorUnavailable(TrainerError):
    """The executor cannot run jobs now (the cluster refused or is unreachable)."""
