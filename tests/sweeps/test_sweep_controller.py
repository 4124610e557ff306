"""The controller against a real job book: release, follow, fail, cancel, restart, crash.

The job runner's part is played by ``StandInRunner`` (starts and ends jobs through the
job book's own calls); everything else is the real app, its executor and the real store.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from squarenet.store import ModelStore
from sweeps.sweep_support import GRID_2x2, StandInRunner
from trainer_service.lifecycle import EndReason, RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.book import Job
from trainer_service.runner.executor import Executor
from trainer_service.runner.job_process import STOPPED_ERROR
from trainer_service.runner.kubernetes import disrupted_error
from trainer_service.runner.local import LocalExecutor
from trainer_service.sweeps import reconcile_sweeps
from trainer_service.sweeps.records import SweepFiles


def _create(client: FlaskClient, **changes: Any) -> str:
    body = copy.deepcopy(GRID_2x2)
    body.update(changes)
    response = client.post("/v1/sweeps", json=body)
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"] == f"/v1/sweeps/{response.get_json()['id']}"
    return str(response.get_json()["id"])


def _jobs(client: FlaskClient, sweep_id: str) -> list[dict[str, Any]]:
    jobs: list[dict[str, Any]] = client.get(f"/v1/jobs?sweep={sweep_id}").get_json()["jobs"]
    return jobs


def test_trials_are_released_parallel_at_a_time_and_followed_to_the_end(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = _create(client)
    jobs = _jobs(client, sweep_id)
    assert len(jobs) == 2  # parallelTrialCount
    assert {job["sweep_id"] for job in jobs} == {sweep_id}
    assert {job["params"]["model_name"] for job in jobs} == {f"sweep-{sweep_id}"}
    for _ in range(3):  # any number of passes: still the same two jobs
        reconcile_sweeps(executor)
    assert len(_jobs(client, sweep_id)) == 2

    first = runner.claim()
    runner.succeed(first, mse_in_domain=0.5)
    reconcile_sweeps(executor)
    assert len(_jobs(client, sweep_id)) == 3  # the finished trial's slot went to the next

    scores = iter([0.01, 0.2, 0.3])
    while (sweep := client.get(f"/v1/sweeps/{sweep_id}").get_json())["state"] != "SUCCEEDED":
        runner.succeed(runner.claim(), mse_in_domain=next(scores))
        reconcile_sweeps(executor)
    assert sweep["trials"] == sweep["trialsSucceeded"] == 4
    best = sweep["currentOptimalTrial"]
    assert best["observation"]["metrics"][0] == {"name": "mse_in_domain", "value": 0.01}
    assert best["number"] == 1
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["trials"]
    assert best["parameterAssignments"] == trials[1]["parameterAssignments"]
    points = {tuple(a["value"] for a in t["parameterAssignments"]) for t in trials}
    assert points == {(1, 2.0), (1, 12.0), (4, 2.0), (4, 12.0)}  # the grid, each point once
    assert store.list_versions("square") == []  # trials never touch the served model
    assert len(store.list_versions(f"sweep-{sweep_id}")) == 4


def test_trials_leave_room_in_the_job_queue_for_single_jobs(
    client: FlaskClient, executor: Executor, store: ModelStore
) -> None:
    first = _create(client, parallelTrialCount=4)
    second = _create(client, parallelTrialCount=4)
    queued = _jobs(client, first) + _jobs(client, second)
    assert len(queued) == 4  # half of the queue bound (8), whatever the sweeps ask for
    for _ in range(4):
        assert client.post("/v1/jobs", json={"epochs": 1}).status_code == 202
    assert client.post("/v1/jobs", json={"epochs": 1}).status_code == 429
    reconcile_sweeps(executor)
    assert len(_jobs(client, first) + _jobs(client, second)) == 4


def test_failures_past_max_failed_trial_count_fail_the_sweep_and_cancel_the_rest(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = _create(client, maxFailedTrialCount=0)
    failing, waiting = runner.claim(), runner.claim()
    runner.fail(failing)
    reconcile_sweeps(executor)
    sweep = client.get(f"/v1/sweeps/{sweep_id}").get_json()
    assert sweep["state"] == "RUNNING"  # one trial still has to stop
    runner.confirm_cancel(waiting)
    reconcile_sweeps(executor)
    sweep = client.get(f"/v1/sweeps/{sweep_id}").get_json()
    assert sweep["state"] == "FAILED"
    assert "more than maxFailedTrialCount (0)" in sweep["message"]
    assert (sweep["trialsFailed"], sweep["trialsCancelled"]) == (1, 1)
    assert sweep["trials"] == 2  # no trial is drawn once the sweep stops
    assert [job["state"] for job in _jobs(client, sweep_id)] == ["CANCELLED", "FAILED"]


def test_cancel_stops_queued_and_running_trials_and_never_starts_the_rest(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = _create(client)
    running = runner.claim()
    answer = client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert answer.status_code == 202  # the running trial's runner has not confirmed yet
    assert answer.get_json()["trialsCancelled"] == 1  # the queued one; the rest never drawn
    runner.confirm_cancel(running)
    answer = client.post(f"/v1/sweeps/{sweep_id}/cancel")
    assert answer.status_code == 200
    assert answer.get_json()["state"] == "CANCELLED"
    assert all(job["state"] == "CANCELLED" for job in _jobs(client, sweep_id))
    assert len(_jobs(client, sweep_id)) == 2  # the two never released were never submitted
    assert client.post(f"/v1/sweeps/{sweep_id}/cancel").status_code == 409


def test_a_trial_interrupted_by_a_disruption_runs_again_under_a_new_job(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = _create(client, parallelTrialCount=1)
    interrupted = runner.claim()
    runner.fail(interrupted, error=STOPPED_ERROR, end=EndReason.INTERRUPTED)
    reconcile_sweeps(executor)
    trial = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["trials"][0]
    assert trial["state"] == "QUEUED"
    assert trial["earlierJobIds"] == [interrupted.id]
    assert trial["jobId"] != interrupted.id
    assert client.get(f"/v1/sweeps/{sweep_id}").get_json()["trialsFailed"] == 0


def test_a_trial_whose_pod_was_disrupted_runs_again_once_then_fails(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    evicted = disrupted_error("EvictionByEvictionAPI: Eviction API: evicting")
    sweep_id = _create(client, parallelTrialCount=1, maxFailedTrialCount=5)
    first = runner.claim()
    runner.fail(first, error=evicted, end=EndReason.INTERRUPTED)
    reconcile_sweeps(executor)
    trial = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["trials"][0]
    assert (trial["state"], trial["earlierJobIds"]) == ("QUEUED", [first.id])
    second = runner.claim()
    assert second.id == trial["jobId"] != first.id
    runner.fail(second, error=evicted, end=EndReason.INTERRUPTED)
    reconcile_sweeps(executor)
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["trials"]
    assert trials[0]["state"] == "FAILED"  # disrupted twice: not a third run
    assert trials[0]["earlierJobIds"] == [first.id]
    assert trials[0]["jobId"] == second.id
    jobs = _jobs(client, sweep_id)
    assert sum(job["params"] == first.params.model_dump(mode="json") for job in jobs) == 2
    assert client.get(f"/v1/sweeps/{sweep_id}").get_json()["trialsFailed"] == 1


def test_a_stale_controller_releases_no_trial_and_records_nothing(
    client: FlaskClient, executor: Executor, store: ModelStore
) -> None:
    leading = False
    executor.book.still_leading = lambda: leading  # a finalizer past its Lease renew deadline
    sweep_id = _create(client)
    files = SweepFiles(store)
    created = files.read(sweep_id)
    reconcile_sweeps(executor)
    assert _jobs(client, sweep_id) == []
    assert files.read(sweep_id) == created  # not even the intent of a release
    leading = True
    reconcile_sweeps(executor)
    assert len(_jobs(client, sweep_id)) == 2


class CrashingExecutor(LocalExecutor):
    """An executor whose process dies around one submit (the crash a test cannot arrange)."""

    def __init__(self, executor: Executor, *, after_submit: bool) -> None:
        super().__init__(executor.book)
        self.after_submit = after_submit

    def submit(
        self, params: TrainingParams, *, job_id: str | None = None, sweep_id: str | None = None
    ) -> Job:
        if self.after_submit:
            super().submit(params, job_id=job_id, sweep_id=sweep_id)
        raise SystemExit("crashed")


@pytest.mark.parametrize("after_submit", [False, True], ids=["before submit", "after submit"])
def test_a_crash_around_a_submit_leaves_neither_orphan_nor_twin(
    client: FlaskClient, executor: Executor, store: ModelStore, after_submit: bool
) -> None:
    sweep_id = _create(client, parallelTrialCount=1)
    runner = StandInRunner(executor.book)
    first = runner.claim()
    runner.succeed(first, mse_in_domain=0.1)
    with pytest.raises(SystemExit):
        reconcile_sweeps(CrashingExecutor(executor, after_submit=after_submit))
    record = SweepFiles(store).read(sweep_id)
    assert record is not None
    intent = record.trials[1]
    assert intent.job_id is not None and not intent.submitted  # recorded before the crash
    reconcile_sweeps(executor)  # the next pass, in any process
    jobs = _jobs(client, sweep_id)
    assert [job["id"] for job in jobs] == [intent.job_id, first.id]
    assert jobs[0]["state"] == RunState.QUEUED


def test_the_job_list_filters_by_sweep(client: FlaskClient) -> None:
    single = client.post("/v1/jobs", json={"epochs": 1}).get_json()
    sweep_id = _create(client)
    assert single["sweep_id"] is None
    assert single["id"] not in {job["id"] for job in _jobs(client, sweep_id)}
    assert client.get("/v1/jobs?sweep=20990101-000000-00000000").get_json() == {"jobs": []}
    assert len(client.get("/v1/jobs").get_json()["jobs"]) == 3


def test_a_sweep_that_cannot_be_reconciled_does_not_stop_the_others(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    broken = _create(client, parallelTrialCount=1)
    healthy = _create(client, parallelTrialCount=1)
    path = SweepFiles(store).record_path(broken)
    document = json.loads(path.read_text())
    document["spec"]["base"]["epochs"] = 0  # edited by hand: its next trial cannot be built
    path.write_text(json.dumps(document))
    for _ in range(2):
        runner.succeed(runner.claim(), mse_in_domain=0.1)
        reconcile_sweeps(executor)
    assert len(_jobs(client, healthy)) == 2  # went on
    assert len(_jobs(client, broken)) == 1  # stuck where it was, logged, retried each pass
