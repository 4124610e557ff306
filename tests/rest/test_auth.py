"""SQUARENET_API_TOKEN: POSTs need the bearer token; reads stay open."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest
from flask.testing import FlaskClient

from rest.rest_helpers import TINY, MakeApp
from squarenet.cli.errors import CliError, ExitCode
from squarenet.cli.trainer_client import TrainerClient
from squarenet.stack import command_of

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


# --- a token read from a Secret or a file: the same rule on both sides -------------------


def test_a_token_with_a_trailing_newline_guards_with_the_token_itself(make_app: MakeApp) -> None:
    guarded = make_app(api_token=f"{TOKEN}\n").test_client()  # as `kubectl create secret` leaves it
    response = guarded.post("/v1/jobs", json=TINY, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 202


def test_the_client_sends_a_token_with_a_trailing_newline_as_the_token(make_app: MakeApp) -> None:
    app = make_app(api_token=f"{TOKEN}\n")
    transport = httpx.WSGITransport(app=app)  # the real app, answered in this process
    with TrainerClient("http://trainer", token=f"{TOKEN}\r\n", transport=transport) as client:
        job = client.submit_job({"epochs": 5})
    assert job["state"] == "QUEUED"


def test_a_token_with_whitespace_inside_is_refused_at_start_on_both_sides(tmp_path: Path) -> None:
    bad = "two words"
    trainer = subprocess.run(
        [*command_of("squarenet-trainer"), "--model-store", str(tmp_path / "store")],
        env={**os.environ, "SQUARENET_API_TOKEN": bad},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert trainer.returncode == 2
    assert "SQUARENET_API_TOKEN" in trainer.stderr and "whitespace" in trainer.stderr
    assert bad not in trainer.stderr
    with pytest.raises(CliError) as refused:
        TrainerClient("http://trainer", token=bad)
    assert refused.value.code is ExitCode.USAGE
    assert "whitespace" in refused.value.message and bad not in refused.value.message


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},  # another origin of the same site
        {"Origin": "https://evil.example"},
        {"Origin": "http://localhost:9999"},  # the test client's host is localhost
        {"Origin": "null"},  # a sandboxed frame or a file
    ],
)
def test_a_page_of_another_origin_may_not_change_anything(
    make_app: MakeApp, headers: dict[str, str]
) -> None:
    """CSRF: a body-less form post would otherwise queue a job, token or none."""
    for client in (make_app().test_client(), make_app(api_token=TOKEN).test_client()):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        refused = client.post("/v1/jobs", headers={**headers, **auth})
        assert refused.status_code == 403
        assert refused.get_json()["type"] == "urn:squarenet:problem:cross-site-request"
        assert client.post("/v1/jobs", json=TINY, headers={**headers, **auth}).status_code == 403
        assert client.get("/v1/jobs", headers=headers).get_json() == {"jobs": []}  # reads open


@pytest.mark.parametrize(
    "headers",
    [
        {},  # curl, the CLI, any client that is not a browser
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"},  # the dashboard
        {"Sec-Fetch-Site": "none"},  # typed by the user
    ],
)
def test_the_trainers_own_pages_and_other_clients_may(
    make_app: MakeApp, headers: dict[str, str]
) -> None:
    client = make_app().test_client()
    job = client.post("/v1/jobs", json=TINY, headers=headers)
    assert job.status_code == 202, job.get_json()
    cancel = client.post(f"/v1/jobs/{job.get_json()['id']}/cancel", headers=headers)
    assert cancel.status_code == 200
