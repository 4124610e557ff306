"""A finished sweep's results: trials table and CSV, plots, events, promote and delete."""

from __future__ import annotations

import copy
import csv
import io
import json

from flask.testing import FlaskClient
from rest.rest_helpers import parse_sse

from squarenet.limits import mse_limit
from squarenet.store import ModelStore
from sweeps.sweep_support import GRID_2x2, StandInRunner
from trainer_service.runner.executor import Executor
from trainer_service.sweeps import reconcile_sweeps

SCORES = [0.3, 0.02, 0.5, 0.004]


def _run_to_the_end(client: FlaskClient, executor: Executor, runner: StandInRunner) -> str:
    sweep_id = str(client.post("/v1/sweeps", json=copy.deepcopy(GRID_2x2)).get_json()["id"])
    for score in SCORES:
        runner.succeed(runner.claim(), mse_in_domain=score)
        reconcile_sweeps(executor)
    assert client.get(f"/v1/sweeps/{sweep_id}").get_json()["state"] == "SUCCEEDED"
    return sweep_id


def test_trials_table_and_csv_carry_metrics_and_the_architecture_limit(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = _run_to_the_end(client, executor, runner)
    trials = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["trials"]
    assert [trial["objective"] for trial in trials] == SCORES
    for trial in trials:
        assigned = {a["name"]: a["value"] for a in trial["parameterAssignments"]}
        floor = mse_limit(assigned["mid_range"], assigned["num_neurons"])
        assert trial["mseLimit"] == floor
        assert trial["metrics"]["floor"] == floor
        assert trial["metrics"]["floor_ratio"] == trial["objective"] / floor
    assert mse_limit(12.0, 4) == (12 / 5) ** 4 / 180
    assert all(trial["seconds"] is not None and trial["seconds"] >= 0 for trial in trials)
    response = client.get(f"/v1/sweeps/{sweep_id}/trials.csv")
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [row["num_neurons"] for row in rows] == [
        str(trial["parameterAssignments"][0]["value"]) for trial in trials
    ]
    assert [float(row["mse_in_domain"]) for row in rows] == SCORES
    assert [row["state"] for row in rows] == ["SUCCEEDED"] * 4
    assert float(rows[0]["mse_limit"]) == float(f"{trials[0]['mseLimit']:.6g}")
    assert float(rows[0]["floor_ratio"]) == float(f"{SCORES[0] / trials[0]['mseLimit']:.6g}")
    assert rows[1]["mse_out_of_domain"] == "2"


def test_plots_are_pngs_once_trials_have_finished(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = _run_to_the_end(client, executor, runner)
    early = client.post("/v1/sweeps", json=copy.deepcopy(GRID_2x2)).get_json()["id"]
    assert client.get(f"/v1/sweeps/{early}/plots/objective.png").status_code == 404
    for name in ("objective", "loss"):
        response = client.get(f"/v1/sweeps/{sweep_id}/plots/{name}.png")
        assert response.status_code == 200, response.get_json()
        assert response.mimetype == "image/png"
        assert response.data.startswith(b"\x89PNG\r\n\x1a\n")
    # the stand-in draws no fit.png: the fits plot says there is nothing to show
    assert client.get(f"/v1/sweeps/{sweep_id}/plots/fits.png").status_code == 404
    assert client.get(f"/v1/sweeps/{sweep_id}/plots/other.png").status_code == 404


def test_events_replay_every_trial_change_then_the_final_sweep(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = _run_to_the_end(client, executor, runner)
    response = client.get(f"/v1/sweeps/{sweep_id}/events")
    assert response.mimetype == "text/event-stream"
    events = parse_sse(response.get_data(as_text=True))
    assert [event["event"] for event in events] == ["trial"] * 4 + ["state"]
    assert [json.loads(e["data"])["state"] for e in events[:4]] == ["SUCCEEDED"] * 4
    assert json.loads(events[-1]["data"])["state"] == "SUCCEEDED"


def test_promote_publishes_the_best_trial_and_delete_keeps_it(
    client: FlaskClient, executor: Executor, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = _run_to_the_end(client, executor, runner)
    response = client.post(f"/v1/sweeps/{sweep_id}/promote")
    assert response.status_code == 201, response.get_json()
    promotion = response.get_json()
    assert (promotion["model_name"], promotion["version"], promotion["trial"]) == ("square", 1, 3)
    promoted = store.verify_version("square", 1)  # every file matches its new sha256
    best_job = client.get(f"/v1/sweeps/{sweep_id}/trials").get_json()["trials"][3]["jobId"]
    assert promoted.metadata["sweep"]["id"] == sweep_id
    assert promoted.metadata["sweep"]["trial"] == 3
    assert promoted.metadata["sweep"]["job_id"] == best_job
    assert promoted.metadata["metrics"]["mse_in_domain"] == 0.004
    assert client.get(f"/v1/sweeps/{sweep_id}").get_json()["promotions"][0]["version"] == 1

    assert client.delete(f"/v1/sweeps/{sweep_id}").status_code == 204
    assert client.get(f"/v1/sweeps/{sweep_id}").status_code == 404
    assert not store.model_dir(f"sweep-{sweep_id}").exists()
    assert store.verify_version("square", 1).version == 1  # the promoted version stays
    assert client.delete(f"/v1/sweeps/{sweep_id}").status_code == 404


def test_promote_without_a_succeeded_trial_and_delete_of_a_running_sweep_are_409(
    client: FlaskClient, store: ModelStore, runner: StandInRunner
) -> None:
    sweep_id = client.post("/v1/sweeps", json=copy.deepcopy(GRID_2x2)).get_json()["id"]
    runner.fail(runner.claim())
    response = client.post(f"/v1/sweeps/{sweep_id}/promote")
    assert response.status_code == 409
    assert response.get_json()["type"] == "urn:squarenet:problem:nothing-to-promote"
    assert client.delete(f"/v1/sweeps/{sweep_id}").status_code == 409
    assert store.list_versions("square") == []


def test_unknown_sweeps_are_404(client: FlaskClient) -> None:
    for path in ("", "/trials", "/trials.csv", "/events", "/plots/loss.png"):
        for sweep_id in ("20990101-000000-00000000", "..", "x"):
            response = client.get(f"/v1/sweeps/{sweep_id}{path}")
            assert response.status_code == 404, (sweep_id, path)
            assert response.mimetype == "application/problem+json"
    for action in ("cancel", "promote"):
        assert client.post(f"/v1/sweeps/20990101-000000-00000000/{action}").status_code == 404
    assert client.get("/v1/sweeps?state=DONE").status_code == 422
