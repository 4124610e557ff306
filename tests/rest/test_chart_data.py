"""GET /v1/jobs/{id}/epochs and /fit: the data of the dashboard's charts, and their refusals."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from rest.rest_helpers import TINY
from trainer_service.params import TrainingParams
from trainer_service.runner.book import JobBook
from trainer_service.training.data import make_data
from trainer_service.training.fit_curve import (
    CURVE_POINTS,
    DATA_POINTS_SHOWN,
    FIT_DATA,
    fit_curve,
    write_fit_curve,
)


def book_of(app: Flask) -> JobBook:
    book: JobBook = app.extensions["squarenet"].book
    return book


def queued_job(client: FlaskClient) -> str:
    response = client.post("/v1/jobs", json=TINY)
    assert response.status_code == 202
    return str(response.get_json()["id"])


def clipped_square(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """A stand-in model: x² inside [-5, 5], straight lines of slope ±10 outside (like ReLUs)."""
    values = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(values) <= 5, values**2, 25 + 10 * (np.abs(values) - 5))


def test_epochs_of_a_job_are_its_history_in_order(app: Flask, client: FlaskClient) -> None:
    job_id = queued_job(client)
    path = book_of(app).files.progress_path(job_id)  # as the job's process appends it
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"epoch": n, "epochs": 5, "loss": 1.0 / n, "val_loss": None} for n in (1, 2, 3)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    response = client.get(f"/v1/jobs/{job_id}/epochs")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["job_id"] == job_id
    assert body["epochs"] == TINY["epochs"]
    assert [row["epoch"] for row in body["history"]] == [1, 2, 3]
    assert body["history"][1] == {"epoch": 2, "loss": 0.5, "val_loss": None}


def test_a_queued_job_has_an_empty_history(client: FlaskClient) -> None:
    job_id = queued_job(client)
    assert client.get(f"/v1/jobs/{job_id}/epochs").get_json()["history"] == []


@pytest.mark.parametrize("endpoint", ["epochs", "fit"])
@pytest.mark.parametrize(
    "job_id", ["20261129T051500Z-3f9a1c2b", "nope", "..", "%2e%2e%2fetc", "A" * 300]
)
def test_unknown_or_malformed_job_ids_are_404_problems(
    client: FlaskClient, endpoint: str, job_id: str
) -> None:
    response = client.get(f"/v1/jobs/{job_id}/{endpoint}")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert response.get_json()["status"] == 404


def test_fit_before_the_job_drew_it_is_a_404_naming_it(client: FlaskClient) -> None:
    job_id = queued_job(client)
    response = client.get(f"/v1/jobs/{job_id}/fit")
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"
    assert FIT_DATA in response.get_json()["detail"]


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_the_chart_endpoints_only_answer_get(client: FlaskClient, method: str) -> None:
    job_id = queued_job(client)
    for endpoint in ("epochs", "fit"):
        response = getattr(client, method)(f"/v1/jobs/{job_id}/{endpoint}")
        assert response.status_code == 405
        assert "GET" in response.headers["Allow"]


def test_fit_serves_the_curve_the_job_wrote(app: Flask, client: FlaskClient) -> None:
    job_id = queued_job(client)
    params = TrainingParams.model_validate({"n_samples": 2000, "seed": 3})
    data = make_data(params, np.random.default_rng(3))
    curve = fit_curve(clipped_square, data, params.domain, np.random.default_rng(4))
    folder = book_of(app).files.job_dir(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    write_fit_curve(curve, folder / FIT_DATA)
    response = client.get(f"/v1/jobs/{job_id}/fit")
    assert response.status_code == 200
    body = response.get_json()
    assert body["job_id"] == job_id
    assert body["model_version"] is None  # still QUEUED here: no version published
    assert body["domain"] == [-5.0, 5.0]
    assert len(body["x"]) == len(body["target"]) == len(body["prediction"]) == CURVE_POINTS


def test_fit_curve_spans_twice_the_domain_and_finds_the_worst_extrapolation() -> None:
    params = TrainingParams.model_validate({"n_samples": 4000, "mid_range": 10, "seed": 1})
    data = make_data(params, np.random.default_rng(1))
    curve = fit_curve(clipped_square, data, params.domain, np.random.default_rng(2))
    assert curve["x"][0] == -10.0 and curve["x"][-1] == 10.0
    assert curve["domain"] == [-5.0, 5.0]
    assert curve["target"][0] == 100.0
    assert curve["prediction"][0] == pytest.approx(75.0)
    # the largest gap outside the domain is at its far ends: 100 - 75
    assert abs(curve["max_extrapolation_error"]["x"]) == 10.0
    assert curve["max_extrapolation_error"]["error"] == pytest.approx(25.0)
    assert len(curve["data"]["x"]) == DATA_POINTS_SHOWN
    xs = np.asarray(curve["data"]["x"])
    assert np.all((xs >= -5) & (xs <= 5))
    assert curve["data"]["y"] == pytest.approx(list(xs**2), rel=1e-4)  # float32 rows, 6 digits
    json.dumps(curve, allow_nan=False)  # plain JSON numbers only


def test_a_tiny_data_set_sends_every_row() -> None:
    params = TrainingParams.model_validate({"n_samples": 20, "batch_size": 4, "seed": 1})
    data = make_data(params, np.random.default_rng(1))
    curve = fit_curve(clipped_square, data, params.domain, np.random.default_rng(2))
    assert len(curve["data"]["x"]) == len(data.x_train)


def test_the_openapi_document_describes_the_chart_endpoints(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    for endpoint, operation in (("epochs", "getJobEpochs"), ("fit", "getJobFit")):
        get = paths[f"/v1/jobs/{{job_id}}/{endpoint}"]["get"]
        assert get["operationId"] == operation
        assert set(get["responses"]) == {"200", "404"}
    assert paths["/"]["get"]["responses"]["200"]["content"] == {
        "text/html": {"schema": {"type": "string"}}
    }
