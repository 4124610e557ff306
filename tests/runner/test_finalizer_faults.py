"""The finalizer's pass under faults no cluster here can produce on demand: an API call that
fails for one job only, and a replica whose Lease renewal is overdue (a hung call, a paused
process). The API is a fake client (attributes shaped as the kubernetes client returns
them); the job book and its records are real, on a temporary store."""

from __future__ import annotations

import logging
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3

from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.runner.book import JobBook, JobState
from trainer_service.runner.kubernetes import JOB_ID_LABEL, RENEW_SECONDS, Finalizer

TINY = TrainingParams.model_validate({"n_samples": 200, "epochs": 3, "batch_size": 20, "seed": 1})


def job_item(job_id: str, condition: str, reason: str = "") -> SimpleNamespace:
    ended = SimpleNamespace(type=condition, status="True", reason=reason, message="")
    return SimpleNamespace(
        metadata=SimpleNamespace(labels={JOB_ID_LABEL: job_id}, deletion_timestamp=None),
        status=SimpleNamespace(conditions=[ended], ready=0, succeeded=0, failed=1),
        spec=SimpleNamespace(suspend=False),
    )


class FakeApi:
    """Jobs as listed; the pod list of ``unreachable_for`` fails as a dropped connection."""

    def __init__(self, items: list[SimpleNamespace], unreachable_for: str) -> None:
        self.items = items
        self.unreachable_for = unreachable_for

    def list_namespaced_job(self, namespace: str, label_selector: str) -> Any:
        return SimpleNamespace(items=self.items)

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        if label_selector.endswith(self.unreachable_for):
            raise urllib3.exceptions.MaxRetryError(None, "/api/v1/pods", "connection refused")  # type: ignore[arg-type]
        return SimpleNamespace(items=[])


def finalizer(book: JobBook, api: FakeApi) -> Finalizer:
    """A Finalizer without a cluster behind it: its clients are the fake."""
    found = Finalizer.__new__(Finalizer)
    found.book = book
    found.sweeps = None
    found.max_pending_seconds = 300
    found.namespace = "squarenet"
    found.batch = found.core = api  # type: ignore[assignment]
    found.selector = JOB_ID_LABEL
    found.lock = SimpleNamespace(renewed_at=time.monotonic())  # type: ignore[assignment]
    found.leading = threading.Event()
    found.leading.set()
    found.stopping = threading.Event()
    found.orphans, found.pending, found.problems = {}, {}, {}
    return found


def test_one_failing_job_does_not_block_the_others_and_is_logged_once(
    store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    book = JobBook(store, local_lock=False)
    first, failing, last = (book.submit(TINY).id for _ in range(3))
    api = FakeApi(
        [job_item(first, "Complete"), job_item(failing, "Failed", "BackoffLimitExceeded"),
         job_item(last, "Failed", "BackoffLimitExceeded")],
        unreachable_for=failing,
    )  # fmt: skip
    settling = finalizer(book, api)
    with caplog.at_level(logging.INFO, logger="trainer_service.runner"):
        for _ in range(3):
            settling.tick()
    assert book.get(first).state is JobState.FAILED
    assert book.get(last).state is JobState.FAILED
    assert book.get(failing).state is JobState.QUEUED  # retried on the next pass
    about = [r for r in caplog.records if failing in r.getMessage() and r.levelname == "ERROR"]
    assert len(about) == 1, [r.getMessage() for r in about]
    assert "MaxRetryError" in about[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)  # no traceback
    api.unreachable_for = "nobody"
    settling.tick()
    assert book.get(failing).state is JobState.FAILED


def test_a_replica_whose_lease_renewal_is_overdue_changes_no_state(store: ModelStore) -> None:
    book = JobBook(store, local_lock=False)
    job_id = book.submit(TINY).id
    settling = finalizer(book, FakeApi([job_item(job_id, "Complete")], unreachable_for="-"))
    settling.lock.renewed_at = time.monotonic() - RENEW_SECONDS - 1  # a pause past the deadline
    settling.tick()
    assert book.get(job_id).state is JobState.QUEUED
    settling.lock.renewed_at = time.monotonic()
    settling.tick()
    assert book.get(job_id).state is JobState.FAILED
