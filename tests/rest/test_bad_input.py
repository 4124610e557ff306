"""Every bad input has a defined answer: a problem response with the status named here."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from rest.rest_helpers import TINY
from trainer_service.settings import MAX_BODY_BYTES

PROBLEM = "application/problem+json"


def post_raw(client: FlaskClient, body: bytes, content_type: str | None = "application/json"):  # type: ignore[no-untyped-def]
    return client.post("/v1/jobs", data=body, content_type=content_type)


def assert_problem(response, status: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.data
    assert response.mimetype == PROBLEM
    document: dict[str, object] = response.get_json()
    assert document["status"] == status
    assert {"type", "title", "detail"} <= document.keys()
    assert "Traceback" not in response.get_data(as_text=True)
    return document


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"epochs": }', b"{'epochs': 5}", b'{"epochs": 5,}', b"\xff\xfe{}", b"nul"],
)
def test_malformed_json_is_400(client: FlaskClient, body: bytes) -> None:
    assert_problem(post_raw(client, body), 400)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_body_that_is_not_json_is_415(client: FlaskClient, content_type: str | None) -> None:
    document = assert_problem(post_raw(client, b'{"epochs": 5}', content_type), 415)
    assert "application/json" in str(document["detail"])


def test_body_over_64_kib_is_413(client: FlaskClient) -> None:
    body = b'{"epochs": 5' + b" " * MAX_BODY_BYTES + b"}"
    assert_problem(post_raw(client, body), 413)


def test_body_of_exactly_64_kib_is_read(client: FlaskClient) -> None:
    head = b'{"epochs": 5}'
    response = post_raw(client, head + b" " * (MAX_BODY_BYTES - len(head)))
    assert response.status_code == 202


def test_integer_of_thousands_of_digits_is_400_not_500(client: FlaskClient) -> None:
    document = assert_problem(post_raw(client, b'{"epochs": ' + b"9" * 5000 + b"}"), 400)
    assert "digits" in str(document["detail"])


@pytest.mark.parametrize(
    ("body", "field"), [(b'{"mid_range": 1e99999}', "mid_range"), (b'{"epochs": 1e400}', "epochs")]
)
def test_number_overflowing_to_infinity_is_422(
    client: FlaskClient, body: bytes, field: str
) -> None:
    document = assert_problem(post_raw(client, body), 422)
    assert field in str(document["detail"])


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 30_000 + b"]" * 30_000,
        b"[" * 60_000,
        b'{"seed": ' + b"[" * 30_000 + b"]" * 30_000 + b"}",
    ],
)
def test_deeply_nested_json_is_400_not_500(client: FlaskClient, body: bytes) -> None:
    assert len(body) <= MAX_BODY_BYTES
    assert_problem(post_raw(client, body), 400)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"[]", "body"),
        (b"5", "body"),
        (b'"epochs"', "body"),
        (b"null", "body"),
        (b'{"epoch": 5}', "epoch"),
        (b'{"epochs": "5"}', "epochs"),
        (b'{"epochs": true}', "epochs"),
        (b'{"epochs": 5.5}', "epochs"),
        (b'{"epochs": 0}', "epochs"),
        (b'{"epochs": -1}', "epochs"),
        (b'{"epochs": 100000000}', "epochs"),
        (b'{"n_samples": 5}', "n_samples"),
        (b'{"n_samples": 1000000000}', "n_samples"),
        (b'{"mid_range": 0}', "mid_range"),
        (b'{"mid_range": -10}', "mid_range"),
        (b'{"mid_range": NaN}', "mid_range"),
        (b'{"mid_range": Infinity}', "mid_range"),
        (b'{"learning_rate": -Infinity}', "learning_rate"),
        (b'{"learning_rate": NaN}', "learning_rate"),
        (b'{"num_neurons": 0}', "num_neurons"),
        (b'{"num_neurons": 1000000}', "num_neurons"),
        (b'{"validation_split": 1.5}', "validation_split"),
        (b'{"seed": -1}', "seed"),
        (b'{"init": "zeros"}', "init"),
        (b'{"model_name": "../etc"}', "model_name"),
        (b'{"n_samples": 200, "batch_size": 161}', "batch_size"),
        (b'{"n_samples": 10, "validation_split": 0.05, "batch_size": 1}', "n_samples"),
    ],
)
def test_invalid_hyperparameter_is_422_naming_the_field(
    client: FlaskClient, body: bytes, field: str
) -> None:
    document = assert_problem(post_raw(client, body), 422)
    errors = document["errors"]
    assert isinstance(errors, list) and errors
    assert field in [error["field"] for error in errors]
    assert field in str(document["detail"])
    assert client.get("/v1/jobs").get_json() == {"jobs": []}


def test_every_bad_field_is_named_at_once(client: FlaskClient) -> None:
    document = assert_problem(client.post("/v1/jobs", json={"epochs": 0, "colour": "red"}), 422)
    assert {e["field"] for e in document["errors"]} == {"epochs", "colour"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/jobs/nope",
        "/v1/jobs/20261129T051500Z-3f9a1c2b",  # well formed, never created
        "/v1/jobs/20261129T051500Z-3f9a1c2bX",
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "/v1/jobs/%2e%2e",
        "/v1/jobs/.lock",
        "/v1/jobs/queue",
        "/v1/jobs/jobs",
        "/v1/jobs/nope/events",
        "/v1/jobs/nope/plots/loss.png",
        "/v1/jobs/..%2Fsquare/plots/fit.png",
    ],
)
def test_unknown_or_malformed_job_id_is_404(client: FlaskClient, path: str) -> None:
    assert_problem(client.get(path), 404)


@pytest.mark.parametrize("job_id", ["nope", "20261129T051500Z-3f9a1c2b", "%2e%2e"])
def test_cancel_of_unknown_job_is_404(client: FlaskClient, job_id: str) -> None:
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel"), 404)


def test_unknown_route_is_404_problem(client: FlaskClient) -> None:
    document = assert_problem(client.get("/v2/jobs"), 404)
    assert document["instance"] == "/v2/jobs"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/jobs"),
        ("PUT", "/v1/jobs"),
        ("POST", "/v1/models"),
        ("GET", "/v1/jobs/x/cancel"),
    ],
)
def test_wrong_method_is_405_problem_with_allow(
    client: FlaskClient, method: str, path: str
) -> None:
    response = client.open(path, method=method)
    assert_problem(response, 405)
    assert response.headers["Allow"]


def test_a_valid_body_after_bad_ones_is_accepted(client: FlaskClient) -> None:
    post_raw(client, b"{")
    assert client.post("/v1/jobs", json=TINY).status_code == 202
