"""SQUARENET_API_TOKEN: POSTs need the bearer token; reads stay open."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from rest.rest_helpers import TINY, MakeApp

TOKEN = "s3cret-token"  # noqa: S105 - a test token


@pytest.fixture
def guarded(make_app: MakeApp) -> FlaskClient:
    return make_app(api_token=TOKEN).test_client()


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN],
)
def test_post_without_the_right_token_is_401_with_challenge(
    guarded: FlaskClient, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = guarded.post("/v1/jobs", json=TINY, headers=headers)
    assert response.status_code == 401
    assert response.mimetype == "application/problem+json"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert guarded.get("/v1/jobs").get_json() == {"jobs": []}


def test_cancel_without_token_is_401_and_leaves_the_job(guarded: FlaskClient) -> None:
    job = guarded.post("/v1/jobs", json=TINY, headers={"Authorization": f"Bearer {TOKEN}"})
    assert job.status_code == 202
    job_id = job.get_json()["id"]
    assert guarded.post(f"/v1/jobs/{job_id}/cancel").status_code == 401
    assert guarded.get(f"/v1/jobs/{job_id}").get_json()["state"] == "QUEUED"
    cancelled = guarded.post(
        f"/v1/jobs/{job_id}/cancel", headers={"Authorization": f"bearer {TOKEN}"}
    )
    assert cancelled.status_code == 200


@pytest.mark.parametrize(
    "path", ["/v1/jobs", "/v1/models", "/healthz", "/readyz", "/metrics", "/openapi.json"]
)
def test_reads_stay_open(guarded: FlaskClient, path: str) -> None:
    assert guarded.get(path).status_code == 200


def test_blank_token_setting_means_no_token(make_app: MakeApp) -> None:
    blank = "  "
    client = make_app(api_token=blank).test_client()
    assert client.post("/v1/jobs", json=TINY).status_code == 202


def test_unknown_route_is_still_404_not_401(guarded: FlaskClient) -> None:
    assert guarded.post("/v1/nothing").status_code == 404
