"""A finished sweep's results: trials table and CSV, plots, events, promote and delete."""

from __future__ import annotations

import copy
import csv
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from matplotlib.image import imread, imsave
from rest.rest_helpers import parse_sse

from squarenet.limits import mse_limit
from squarenet.store import ModelStore
from sweeps.sweep_support import GRID_2x2, StandInRunner
from trainer_service.api.sweeps import sweep_events
from trainer_service.runner.executor import Executor
from trainer_service.runner.records import Report
from trainer_service.sweeps import plots, reconcile_sweeps
from trainer_service.sweeps.records import SweepFiles, SweepRecord

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


def test_fits_shows_the_best_trials_of_a_thousand_in_one_bounded_figure(
    client: FlaskClient,
    executor: Executor,
    runner: StandInRunner,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweep_id = _run_to_the_end(client, executor, runner)
    files = SweepFiles(executor.book.store)
    record = files.read(sweep_id)
    assert record is not None
    template = record.trials[0]
    trials = [
        template.model_copy(
            update={"number": n, "metrics": {**(template.metrics or {}), "mse_in_domain": 1 + n}}
        )
        for n in range(1000)
    ]
    files.write(record.model_copy(update={"trials": trials}))
    png = tmp_path / "fit.png"
    imsave(png, np.zeros((30, 40, 3)))
    for trial in trials:
        files.trial_dir(sweep_id, trial.number).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, files.trial_dir(sweep_id, trial.number) / "fit.png")
    (files.trial_dir(sweep_id, 7) / "fit.png").write_bytes(b"not a png")
    drawn: list[str] = []

    def counting(path: Path) -> Any:
        drawn.append(path.parent.name)
        return imread(path)

    monkeypatch.setattr(plots, "imread", counting)
    response = client.get(f"/v1/sweeps/{sweep_id}/plots/fits.png")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.data.startswith(b"\x89PNG")
    assert int.from_bytes(response.data[20:24], "big") <= 3 * 3.0 * 90  # rows x inches x dpi
    assert drawn == [f"trial-{n}" for n in range(plots.FITS_SHOWN)]  # the lowest MSE first


def test_sweep_event_polls_parse_the_record_only_when_it_changed(
    client: FlaskClient,
    executor: Executor,
    runner: StandInRunner,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sweep_id = str(client.post("/v1/sweeps", json=copy.deepcopy(GRID_2x2)).get_json()["id"])
    running = runner.claim()
    runner.report_epochs(running, [0.5, 0.4])
    files = SweepFiles(executor.book.store)
    parsed: list[str] = []
    validate = SweepRecord.model_validate_json

    def counting(text: str | bytes) -> SweepRecord:
        parsed.append("record")
        return validate(text)

    progress_reads: list[str] = []
    read_report = executor.book.files.read_report

    def counting_reads(job_id: str) -> Report:
        progress_reads.append(job_id)
        return read_report(job_id)

    monkeypatch.setattr(SweepRecord, "model_validate_json", counting)
    monkeypatch.setattr(executor.book.files, "read_report", counting_reads)
    stream = sweep_events(files, executor.book, sweep_id, poll_interval=0, keepalive=0)

    def polls(count: int) -> list[str]:
        """The trial states sent over ``count`` polls (each poll ends with a keep-alive)."""
        states: list[str] = []
        while count:
            event = next(stream)
            count -= event == ": keep-alive\n\n"
            states += [json.loads(e["data"])["state"] for e in parse_sse(event)]
        return states

    next(stream)  # retry:
    assert sorted(polls(10)) == ["QUEUED", "RUNNING"]
    assert parsed == ["record"] and progress_reads == []
    runner.succeed(running, mse_in_domain=0.3)
    reconcile_sweeps(executor)  # the controller rewrites the record
    parsed.clear()
    progress_reads.clear()
    assert "SUCCEEDED" in polls(3)
    assert parsed == ["record"] and progress_reads == []  # the new record, once
