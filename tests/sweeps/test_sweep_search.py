"""Search, early stopping, the goal, the floor and PATCH, through the controller and the API.

The job runner's part is played by ``StandInRunner``: each job's losses come from a fixed
function of its hyperparameters (better with more neurons and a learning rate near 0.005),
so the search has something to find and the outcome does not depend on training.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
from flask.testing import FlaskClient

from squarenet.limits import mse_limit
from squarenet.store import ModelStore
from sweeps.sweep_support import StandInRunner
from trainer_service.lifecycle import RunState
from trainer_service.runner.book import CANCELLED, Job
from trainer_service.runner.executor import Executor
from trainer_service.sweeps import reconcile_sweeps
from trainer_service.sweeps.records import SweepFiles, SweepRecord

EPOCHS = 10
HALF = 5

TPE_SWEEP: dict[str, Any] = {
    "base": {"n_samples": 200, "epochs": EPOCHS, "batch_size": 20, "seed": 1},
    "parameters": [
        {"name": "num_neurons", "parameterType": "int", "feasibleSpace": {"min": 1, "max": 32}},
        {"name": "learning_rate", "parameterType": "double",
         "feasibleSpace": {"min": 0.0005, "max": 0.05, "distribution": "logUniform"}},
    ],
    "algorithm": {"algorithmName": "tpe", "algorithmSettings": [
        {"name": "random_state", "value": "11"}, {"name": "n_startup_trials", "value": "4"}]},
    "earlyStopping": {"algorithmName": "medianstop", "algorithmSettings": [
        {"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "3"}]},
    "maxTrialCount": 16,
    "parallelTrialCount": 2,
}  # fmt: skip


def _final_loss(job: Job) -> float:
    """What the stand-in's training of ``job`` ends at."""
    params = job.params
    return 1 / params.num_neurons + abs(math.log10(params.learning_rate / 0.005))


def _losses(job: Job) -> list[float]:
    final = _final_loss(job)
    return [final * (1 + 4 / epoch) for epoch in range(1, EPOCHS + 1)]


def _sweep(client: FlaskClient, sweep_id: str) -> dict[str, Any]:
    document: dict[str, Any] = client.get(f"/v1/sweeps/{sweep_id}").get_json()
    return document


def _trials(client: FlaskClient, sweep_id: str) -> list[dict[str, Any]]:
    trials: list[dict[str, Any]] = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["trials"]
    return trials


def _queued(executor: Executor) -> list[Job]:
    return [job for job in executor.book.unfinished() if job.state is RunState.QUEUED]


def _round(runner: StandInRunner, executor: Executor) -> None:
    """Start every queued trial, let each report half its epochs, then finish each: cancelled
    when the controller asked it to stop, else succeeded at its final loss."""
    started = [runner.claim() for _ in _queued(executor)]
    for job in started:
        runner.report_epochs(job, _losses(job)[:HALF])
    reconcile_sweeps(executor)  # the controller sees every half-run trial
    for job in started:
        if executor.book.cancel_requested(job.id):
            runner.confirm_cancel(job)
        else:
            runner.report_epochs(job, _losses(job)[HALF:], first=HALF + 1)
            runner.succeed(job, _final_loss(job), epochs_reported=True)
    reconcile_sweeps(executor)


def _run(client: FlaskClient, executor: Executor, runner: StandInRunner, sweep_id: str) -> None:
    for _ in range(64):  # far more rounds than trials: a stuck sweep fails here, not hangs
        if _sweep(client, sweep_id)["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            return
        _round(runner, executor)
    raise AssertionError(f"sweep {sweep_id} did not end: {_sweep(client, sweep_id)}")


def test_a_tpe_sweep_with_medianstop_stops_trials_early_and_finds_the_argmin(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = client.post("/v1/sweeps", json=TPE_SWEEP).get_json()["id"]
    _run(client, executor, runner, sweep_id)
    sweep = _sweep(client, sweep_id)
    trials = _trials(client, sweep_id)
    assert sweep["state"] == "SUCCEEDED"
    assert sweep["trials"] == len(trials) == 16
    stopped = [trial for trial in trials if trial["state"] == "EARLY_STOPPED"]
    succeeded = [trial for trial in trials if trial["state"] == "SUCCEEDED"]
    assert stopped, [trial["state"] for trial in trials]
    assert sweep["trialsEarlyStopped"] == len(stopped)
    assert len(stopped) + len(succeeded) == 16
    for trial in stopped:
        assert trial["reason"].startswith("medianstop at epoch")
        assert trial["modelVersion"] is None  # its partial model was never published
        job = client.get(f"/v1/jobs/{trial['jobId']}").get_json()
        assert job["state"] == "CANCELLED"
    assert len(store.list_versions(sweep["modelName"])) == len(succeeded)
    for trial in trials:
        values = {a["name"]: a["value"] for a in trial["parameterAssignments"]}
        assert isinstance(values["num_neurons"], int) and 1 <= values["num_neurons"] <= 32
        assert 0.0005 <= values["learning_rate"] <= 0.05
    best = min(succeeded, key=lambda trial: trial["objective"])
    assert sweep["currentOptimalTrial"]["number"] == best["number"]
    csv_states = [line.split(",")[2] for line in
                  client.get(f"/v1/sweeps/{sweep_id}/trials.csv").text.splitlines()[1:]]  # fmt: skip
    assert csv_states.count("EARLY_STOPPED") == len(stopped)

    again = client.post("/v1/sweeps", json=TPE_SWEEP).get_json()["id"]
    for _ in range(2):
        _round(runner, executor)
    first_four = [trial["parameterAssignments"] for trial in _trials(client, again)[:4]]
    assert first_four == [trial["parameterAssignments"] for trial in trials[:4]]


GOAL_SWEEP: dict[str, Any] = {
    "base": {"n_samples": 200, "epochs": 2, "batch_size": 20, "seed": 1},
    "parameters": [{"name": "num_neurons", "parameterType": "int",
                    "feasibleSpace": {"min": 1, "max": 64}}],
    "algorithm": {"algorithmName": "random",
                  "algorithmSettings": [{"name": "random_state", "value": "1"}]},
    "objective": {"goal": 0.01},
    "maxTrialCount": 6,
}  # fmt: skip


def test_the_goal_ends_the_sweep_and_a_patch_continues_it(
    client: FlaskClient, executor: Executor, runner: StandInRunner
) -> None:
    sweep_id = client.post("/v1/sweeps", json=GOAL_SWEEP).get_json()["id"]
    for score in (0.5, 0.3, 0.005):  # the third trial reaches the goal
        runner.succeed(runner.claim(), mse_in_domain=score)
        reconcile_sweeps(executor)
    sweep = _sweep(client, sweep_id)
    assert sweep["state"] == "SUCCEEDED"
    assert sweep["trials"] == 3 < sweep["spec"]["maxTrialCount"]
    assert sweep["message"].startswith("trial 2 reached the goal")
    assert _queued(executor) == []

    answer = client.patch(f"/v1/sweeps/{sweep_id}", json={"maxTrialCount": 5})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["state"] == "RUNNING"
    for score in (0.2, 0.4):  # past the goal's trial: these do not end it again
        runner.succeed(runner.claim(), mse_in_domain=score)
        reconcile_sweeps(executor)
    sweep = _sweep(client, sweep_id)
    assert sweep["state"] == "SUCCEEDED"
    assert sweep["trials"] == sweep["trialsSucceeded"] == 5
    assert sweep["currentOptimalTrial"]["number"] == 2
    assert sweep["message"] is None


def test_patch_of_a_running_sweep_widens_it_and_refuses_anything_else(
    client: FlaskClient, executor: Executor, runner: StandInRunner
) -> None:
    sweep_id = client.post("/v1/sweeps", json=GOAL_SWEEP).get_json()["id"]
    assert len(_queued(executor)) == 1
    answer = client.patch(f"/v1/sweeps/{sweep_id}", json={"parallelTrialCount": 3})
    assert answer.status_code == 200
    assert answer.get_json()["spec"]["parallelTrialCount"] == 3
    assert len(_queued(executor)) == 3  # released at once
    refusals = [
        ({"parameters": []}, "parameters", "Extra inputs"),
        ({"maxTrialCount": 2}, "maxTrialCount", "at least 3"),
        ({}, "maxTrialCount", "give maxTrialCount or parallelTrialCount"),
        ({"parallelTrialCount": 0}, "parallelTrialCount", "greater than or equal to 1"),
        ({"maxTrialCount": "8"}, "maxTrialCount", "integer"),
    ]
    for body, field, said in refusals:
        answer = client.patch(f"/v1/sweeps/{sweep_id}", json=body)
        assert answer.status_code == 422, (body, answer.get_json())
        assert answer.mimetype == "application/problem+json"
        errors = {error["field"]: error["message"] for error in answer.get_json()["errors"]}
        assert said in errors[field], errors
    assert (
        client.patch("/v1/sweeps/20990101-000000-00000000", json={"maxTrialCount": 9}).status_code
        == 404
    )
    assert client.post(f"/v1/sweeps/{sweep_id}/cancel").status_code in (200, 202)
    for job in executor.book.unfinished():
        if job.state is RunState.QUEUED:
            executor.book.finish(job.id, CANCELLED)
    reconcile_sweeps(executor)
    answer = client.patch(f"/v1/sweeps/{sweep_id}", json={"maxTrialCount": 9})
    assert answer.status_code == 409
    assert "only a running or succeeded sweep continues" in answer.get_json()["detail"]


def test_a_finished_grid_cannot_grow_and_a_finished_sweep_needs_more_trials(
    client: FlaskClient, executor: Executor, runner: StandInRunner
) -> None:
    body = copy.deepcopy(GOAL_SWEEP)
    body.update(algorithm={"algorithmName": "grid"}, objective={}, maxTrialCount=None)
    body["parameters"][0]["feasibleSpace"] = {"list": [1, 2]}
    sweep_id = client.post("/v1/sweeps", json=body).get_json()["id"]
    for _ in range(2):
        runner.succeed(runner.claim(), mse_in_domain=0.5)
        reconcile_sweeps(executor)
    assert _sweep(client, sweep_id)["state"] == "SUCCEEDED"
    for patch, said in (({"maxTrialCount": 3}, "a grid sweep cannot grow"),
                        ({"parallelTrialCount": 2}, "give more than 2 to continue it")):  # fmt: skip
        answer = client.patch(f"/v1/sweeps/{sweep_id}", json=patch)
        assert answer.status_code == 422
        assert said in answer.get_json()["errors"][0]["message"]


def test_skip_below_floor_ends_hopeless_trials_without_a_job(
    client: FlaskClient, executor: Executor, runner: StandInRunner
) -> None:
    body = {
        "base": {"n_samples": 200, "epochs": 2, "batch_size": 20, "seed": 1, "mid_range": 100},
        "parameters": [{"name": "num_neurons", "parameterType": "int",
                        "feasibleSpace": {"list": [2, 5, 10, 90, 100], "skipBelowFloor": True}}],
        "objective": {"goal": 0.01},
        "parallelTrialCount": 2,
    }  # fmt: skip
    sweep_id = client.post("/v1/sweeps", json=body).get_json()["id"]
    jobs = _queued(executor)
    assert sorted(job.params.num_neurons for job in jobs) == [90, 100]
    for job in jobs:
        runner.claim()
        runner.succeed(job, mse_in_domain=0.5)  # neither reaches the goal
    reconcile_sweeps(executor)
    sweep = _sweep(client, sweep_id)
    assert (sweep["state"], sweep["trialsSkipped"], sweep["trialsSucceeded"]) == ("SUCCEEDED", 3, 2)
    for trial in _trials(client, sweep_id):
        neurons = trial["parameterAssignments"][0]["value"]
        floor = mse_limit(100, neurons)
        assert trial["metrics"]["floor"] == floor
        if neurons <= 10:
            assert trial["state"] == "SKIPPED"
            assert trial["jobId"] is None
            assert f"floor {floor:.6g}" in trial["reason"]
        else:
            assert trial["state"] == "SUCCEEDED"
            assert trial["metrics"]["floor_ratio"] == pytest.approx(0.5 / floor)
    assert len(client.get(f"/v1/jobs?sweep={sweep_id}").get_json()["jobs"]) == 2


def test_a_pass_parses_only_the_sweeps_that_can_still_change(
    client: FlaskClient, executor: Executor, runner: StandInRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep_id = client.post("/v1/sweeps", json=GOAL_SWEEP).get_json()["id"]
    for score in (0.5, 0.3, 0.005):
        runner.succeed(runner.claim(), mse_in_domain=score)
        reconcile_sweeps(executor)
    files = SweepFiles(executor.book.store)
    settled = files.read(sweep_id)
    assert settled is not None and settled.settled
    copies = [f"20260101-00000{n}-0000000{n}" for n in range(5)]
    for copy_id in copies:  # as other processes leave them: whole files, replaced
        files.write(settled.model_copy(update={"id": copy_id}))
    reconcile_sweeps(executor)  # this process sees each settled record once
    parsed: list[str] = []
    validate = SweepRecord.model_validate_json

    def counting(text: str | bytes) -> SweepRecord:
        found = validate(text)
        parsed.append(found.id)
        return found

    monkeypatch.setattr(SweepRecord, "model_validate_json", counting)
    for _ in range(3):
        reconcile_sweeps(executor)
    assert parsed == []

    files.write(settled.model_copy(update={"id": copies[0], "message": "rewritten"}))
    reconcile_sweeps(executor)
    reconcile_sweeps(executor)
    assert parsed == [copies[0]]  # a replaced record is read again, once

    parsed.clear()
    answer = client.patch(f"/v1/sweeps/{sweep_id}", json={"maxTrialCount": 4})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["state"] == "RUNNING"  # the patch brought it back
    assert [job.state for job in _queued(executor)] == [RunState.QUEUED]
    runner.succeed(runner.claim(), mse_in_domain=0.2)
    reconcile_sweeps(executor)
    assert _sweep(client, sweep_id)["trials"] == 4
    assert set(parsed) == {sweep_id}
