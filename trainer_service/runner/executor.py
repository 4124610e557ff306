"""The executor seam: how the API hands jobs to whatever runs them.

``--executor local`` runs jobs in child processes of the trainer's runner; ``kubernetes``
makes each job a ``batch/v1`` Job. The API talks to either through ``Executor``; the
trainer's control loop (``python -m trainer_service.control_loop``) runs the executor's loop.
"""

from __future__ import annotations

from typing import Protocol

from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.runner.book import Job, JobBook
from trainer_service.settings import Settings


class Executor(Protocol):
    """What the REST API asks of an executor."""

    book: JobBook

    def submit(
        self, params: TrainingParams, *, job_id: str | None = None, sweep_id: str | None = None
    ) -> Job:
        """Record a job and have it run; raise QueueFull when too many wait.

        A ``job_id`` already recorded returns that job (a named submit is idempotent).
        """

    def cancel(self, job_id: str) -> Job:
        """Record a cancel and return at once: the job CANCELLED when it was QUEUED, else as
        it is now (its runner stops it and records CANCELLED later; nobody waits for that
        here, so a cancel never holds a request thread). Raise JobAlreadyFinished when the
        job ended otherwise."""


def make_book(settings: Settings, store: ModelStore) -> JobBook:
    return JobBook(
        store,
        max_queued=settings.max_queued_jobs,
        keep_finished=settings.keep_finished_jobs,
        local_lock=settings.executor == "local",
        slots=settings.max_concurrent_jobs if settings.executor == "kubernetes" else None,
    )


def make_executor(settings: Settings, store: ModelStore) -> Executor:
    """The executor the settings name, for the API's side."""
    return executor_for(settings, make_book(settings, store))


def executor_for(settings: Settings, book: JobBook) -> Executor:
    """The settings' executor over ``book`` (the runner's own, for its sweep controller)."""
    if settings.executor == "kubernetes":
        from trainer_service.runner.kubernetes import KubernetesExecutor  # noqa: PLC0415

        return KubernetesExecutor(book, settings)
    from trainer_service.runner.local import LocalExecutor  # noqa: PLC0415

    return LocalExecutor(book)
