"""The finalizer's pass under faults no cluster here can produce on demand: an API call that
fails for one job only, and a replica whose Lease renewal is overdue (a hung call, a paused
process), before its pass or during the pod list that decides a job's end. The API is a fake
client (attributes shaped as the kubernetes client returns them); the finalizer is built as
the control loop builds it (from a kubeconfig naming a server it never calls), and the job
book, the sweep controller and their records are real, on a temporary store."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace
from typing import Any

import pytest
import urllib3
from sweeps.sweep_support import GRID_2x2

from squarenet.store import ModelStore
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.book import JobBook
from trainer_service.runner.kubernetes import DISRUPTION, JOB_ID_LABEL, RENEW_SECONDS, Finalizer
from trainer_service.runner.local import LocalExecutor
from trainer_service.settings import Settings
from trainer_service.sweeps.controller import SweepTicker, create_sweep
from trainer_service.sweeps.records import SweepFiles
from trainer_service.sweeps.spec import SweepSpec

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


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: none}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: squarenet}}]
current-context: none
"""


def finalizer(
    book: JobBook, api: Any, sweeps: Any = None, max_pending_seconds: int = 300
) -> Finalizer:
    """A Finalizer built as the control loop builds it, its clients replaced by the fake and
    its Lease renewed just now (as the client's election leaves it)."""
    kubeconfig = book.store.root.parent / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG, encoding="utf-8")
    settings = Settings.model_validate(
        {"model_store": book.store.root, "executor": "kubernetes", "kubeconfig": kubeconfig}
    )
    found = Finalizer(book, settings, sweeps=sweeps)
    found.max_pending_seconds = max_pending_seconds  # 0: at once (the setting's floor is 1 s)
    found.batch = found.core = api
    found.lock = SimpleNamespace(renewed_at=time.monotonic())  # type: ignore[assignment]
    found.leading.set()
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
    assert book.get(first).state is RunState.FAILED
    assert book.get(last).state is RunState.FAILED
    assert book.get(failing).state is RunState.QUEUED  # retried on the next pass
    about = [r for r in caplog.records if failing in r.getMessage() and r.levelname == "ERROR"]
    assert len(about) == 1, [r.getMessage() for r in about]
    assert "MaxRetryError" in about[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)  # no traceback
    api.unreachable_for = "nobody"
    settling.tick()
    assert book.get(failing).state is RunState.FAILED


def test_a_replica_whose_lease_renewal_is_overdue_changes_no_state(store: ModelStore) -> None:
    book = JobBook(store, local_lock=False)
    job_id = book.submit(TINY).id
    settling = finalizer(book, FakeApi([job_item(job_id, "Complete")], unreachable_for="-"))
    settling.lock.renewed_at = time.monotonic() - RENEW_SECONDS - 1  # a pause past the deadline
    settling.tick()
    assert book.get(job_id).state is RunState.QUEUED
    settling.lock.renewed_at = time.monotonic()
    settling.tick()
    assert book.get(job_id).state is RunState.FAILED


def pod(**status: Any) -> SimpleNamespace:
    """A pod as listed: only its status matters here."""
    fields: dict[str, Any] = {"phase": "Pending", "reason": None, "message": None, "conditions": [],
              "init_container_statuses": None, "container_statuses": None}  # fmt: skip
    return SimpleNamespace(status=SimpleNamespace(**{**fields, **status}))


class LapsingApi:
    """Jobs as listed; each pod list takes the caller past its Lease's renew deadline (a
    slow API server: one call may take ~9 s against a 10 s deadline). Deletes are counted."""

    def __init__(self, items: list[SimpleNamespace], pods: list[SimpleNamespace]) -> None:
        self.items, self.pods = items, pods
        self.lapsing: Finalizer | None = None
        self.deleted: list[str] = []

    def list_namespaced_job(self, namespace: str, label_selector: str) -> Any:
        return SimpleNamespace(items=self.items)

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        if self.lapsing is not None:
            self.lapsing.lock.renewed_at = time.monotonic() - RENEW_SECONDS - 1
        return SimpleNamespace(items=self.pods)

    def delete_namespaced_job(self, name: str, namespace: str, propagation_policy: str) -> None:
        self.deleted.append(name)


def pending_item(job_id: str) -> SimpleNamespace:
    """A Job whose pod has not started: no ended condition, nothing ready."""
    item = job_item(job_id, "Complete")
    item.status = SimpleNamespace(conditions=[], ready=0, succeeded=0, failed=0)
    return item


def disrupted_item(job_id: str) -> SimpleNamespace:
    """A Job failed by its pod failure policy: its pod was evicted."""
    item = job_item(job_id, "Failed", "PodFailurePolicy")
    item.status.conditions[0].message = f"Pod squarenet/x has condition {DISRUPTION} matching"
    return item


UNSCHEDULABLE = pod(
    conditions=[SimpleNamespace(type="PodScheduled", status="False", reason="Unschedulable",
                                message="0/1 nodes are available: 1 Insufficient cpu")]
)  # fmt: skip
EVICTED = pod(
    phase="Failed",
    conditions=[SimpleNamespace(type=DISRUPTION, status="True", reason="EvictionByEvictionAPI",
                                message="Eviction API: evicting")],
)  # fmt: skip
FAILED_POD = pod(phase="Failed", reason="Error", message="exit code 1")


@pytest.mark.parametrize(
    ("item", "pods", "error"),
    [
        (pending_item, [UNSCHEDULABLE], "never started: its pod did not start within 0 s: "
         "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu"),
        (disrupted_item, [EVICTED], "interrupted: its pod was disrupted by the cluster "
         "(EvictionByEvictionAPI: Eviction API: evicting)"),
        (lambda job_id: job_item(job_id, "Failed", "BackoffLimitExceeded"), [FAILED_POD],
         "the job's pod failed: Error: exit code 1"),
    ],
    ids=["never started", "disrupted", "pod failed"],
)  # fmt: skip
def test_a_replica_whose_lease_lapses_during_the_pod_list_changes_no_job(
    store: ModelStore, item: Any, pods: list[SimpleNamespace], error: str
) -> None:
    book = JobBook(store, local_lock=False)
    job_id = book.submit(TINY).id
    api = LapsingApi([item(job_id)], pods)
    settling = finalizer(book, api, max_pending_seconds=0)
    api.lapsing = settling
    settling.tick()
    assert book.get(job_id).state is RunState.QUEUED  # the leader (whoever it is) decides
    assert api.deleted == []
    api.lapsing = None  # the calls answer in time again, and the Lease is renewed
    settling.lock.renewed_at = time.monotonic()
    settling.tick()
    ended = book.get(job_id)
    assert ended.state is RunState.FAILED
    assert ended.error is not None and ended.error.startswith(error), ended.error


class LapsingExecutor(LocalExecutor):
    """The sweep's executor, whose submit outlasts the finalizer's Lease renew deadline."""

    def __init__(self, book: JobBook) -> None:
        super().__init__(book)
        self.lapsing: Finalizer | None = None

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        job = super().submit(*args, **kwargs)
        if self.lapsing is not None:
            self.lapsing.lock.renewed_at = time.monotonic() - RENEW_SECONDS - 1
        return job


def test_a_stale_replica_releases_no_sweep_trial(store: ModelStore) -> None:
    book = JobBook(store, local_lock=False)
    executor = LapsingExecutor(book)
    sweep = create_sweep(executor, SweepSpec.model_validate(GRID_2x2))
    ticker = SweepTicker(store, executor)
    settling = finalizer(book, FakeApi([], unreachable_for="-"), sweeps=ticker.tick)
    files = SweepFiles(store, local_lock=False)

    settling.lock.renewed_at = time.monotonic() - RENEW_SECONDS - 1  # paused past the deadline
    ticker.tick()  # as the listener of a job's end runs it, whatever the finalizer's check
    assert book.list() == []
    assert files.read(sweep.id) == sweep  # nothing released, nothing recorded

    settling.lock.renewed_at = time.monotonic()
    executor.lapsing = settling  # the first release's call outlasts the Lease
    ticker.next_pass = 0.0
    ticker.tick()
    released = book.list()
    assert len(released) == 1  # the second trial (parallelTrialCount 2) was not released
    record = files.read(sweep.id)
    assert record is not None and [t.job_id for t in record.trials] == [released[0].id]

    executor.lapsing = None
    settling.lock.renewed_at = time.monotonic()  # this replica (or the next leader) goes on
    ticker.next_pass = 0.0
    ticker.tick()
    record = files.read(sweep.id)
    assert record is not None and len(book.list()) == 2  # the first trial's job, no twin
    assert {t.job_id for t in record.trials} == {job.id for job in book.list()}
