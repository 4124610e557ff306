"""Authentication of mutating calls, and the token never echoed in a log line or an answer.

Runs the real trainer with ``SQUARENET_API_TOKEN`` set and DEBUG logging (the most it ever
writes), makes good and bad calls that carry the token in every place a client might put
it, then searches every answer body and everything the service printed for the token.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from rest.rest_helpers import TINY
from support import service_env

from hostile.hostile_support import API_TOKEN
from squarenet.stack import Trainer, running_trainer
from trainer_service.api.app import create_app
from trainer_service.settings import Settings

pytestmark = pytest.mark.slow

UNKNOWN_ID = "20261129T051500Z-3f9a1c2b"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
WRONG_AUTHORIZATIONS = {
    "missing": None,
    "empty": "",
    "scheme-only": "Bearer",
    "wrong-token": "Bearer not-the-token",
    "token-prefix": f"Bearer {API_TOKEN[:-1]}",
    "token-with-suffix": f"Bearer {API_TOKEN}0",
    "basic-scheme": f"Basic {API_TOKEN}",
    "token-without-scheme": API_TOKEN,
}


@pytest.fixture(scope="module")
def chatty_trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trainer]:
    """A guarded trainer logging at DEBUG, so a leak would show in the captured output."""
    root = tmp_path_factory.mktemp("chatty-trainer")
    with running_trainer(
        root / "store",
        root / "trainer.log",
        "--log-level",
        "DEBUG",
        env=service_env({"SQUARENET_API_TOKEN": API_TOKEN}),
    ) as trainer:
        yield trainer


def fill(path: str) -> str:
    """An OpenAPI path template with every parameter set to a well-shaped unknown job id."""
    return re.sub(r"\{[^}]+\}", UNKNOWN_ID, path)


def served_operations(base_url: str) -> list[tuple[str, str]]:
    """(METHOD, path template) of every operation in the served OpenAPI document."""
    document = httpx.get(f"{base_url}/openapi.json", timeout=5).json()
    return [
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def test_the_document_lists_every_mutating_route_of_the_app(
    chatty_trainer: Trainer, tmp_path: Path
) -> None:
    """So checking the documented POSTs below checks every route that changes anything."""
    app = create_app(Settings.model_validate({"model_store": tmp_path / "store"}))
    in_app = {
        (method, re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule))
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in SAFE_METHODS
    }
    documented = set(served_operations(chatty_trainer.base_url))
    assert in_app
    assert in_app <= documented


@pytest.mark.parametrize("how", list(WRONG_AUTHORIZATIONS))
def test_every_mutating_call_without_the_right_token_is_401(
    chatty_trainer: Trainer, how: str
) -> None:
    authorization = WRONG_AUTHORIZATIONS[how]
    headers = {} if authorization is None else {"Authorization": authorization}
    mutating = [
        op for op in served_operations(chatty_trainer.base_url) if op[0] not in SAFE_METHODS
    ]
    assert mutating, "the document lists no mutating operation"
    for method, path in mutating:
        answer = httpx.request(
            method, chatty_trainer.base_url + fill(path), json=TINY, headers=headers, timeout=10
        )
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert answer.headers["Content-Type"].startswith("application/problem+json")
    assert httpx.get(f"{chatty_trainer.base_url}/v1/jobs", timeout=5).json()["jobs"] == []


def test_reads_stay_open_without_a_token(chatty_trainer: Trainer) -> None:
    """As documented: probes, dashboards and `squarenet jobs` need no secret."""
    reads = [op for op in served_operations(chatty_trainer.base_url) if op[0] == "GET"]
    assert len(reads) >= 5
    for _, path in reads:
        if path.endswith("/events"):
            continue  # a stream; its 404 for an unknown job is checked just below
        answer = httpx.get(chatty_trainer.base_url + fill(path), timeout=10)
        assert answer.status_code in (200, 404), (path, answer.status_code)
        assert answer.status_code != 401
    events = httpx.get(f"{chatty_trainer.base_url}/v1/jobs/{UNKNOWN_ID}/events", timeout=10)
    assert events.status_code == 404


def test_the_token_is_in_no_answer_and_no_log_line(chatty_trainer: Trainer) -> None:
    base = chatty_trainer.base_url
    good = {"Authorization": f"Bearer {API_TOKEN}"}
    bodies: list[bytes] = []

    def keep(answer: httpx.Response) -> httpx.Response:
        bodies.append(answer.content)
        bodies.append(str(answer.headers).encode())
        return answer

    # good calls: submit, read, cancel
    submitted = keep(httpx.post(f"{base}/v1/jobs", json=TINY, headers=good, timeout=10))
    assert submitted.status_code == 202
    job_id = submitted.json()["id"]
    keep(httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10))
    cancelled = keep(httpx.post(f"{base}/v1/jobs/{job_id}/cancel", headers=good, timeout=30))
    assert cancelled.status_code in (200, 202)
    # bad calls: wrong tokens that contain the real one, the token as a value in the body,
    # or a header. Not in a URL: the access log records URLs, so a token belongs in the header
    # only; and a field *name* is echoed back by design (it names the bad field)
    for authorization in WRONG_AUTHORIZATIONS.values():
        if authorization:
            wrong = {"Authorization": authorization}
            assert keep(httpx.post(f"{base}/v1/jobs", json=TINY, headers=wrong)).status_code == 401
    bad_bodies = [
        {"seed": API_TOKEN},
        {"api_token": API_TOKEN},
        {"learning_rate": API_TOKEN, "epochs": API_TOKEN},
    ]
    for body in bad_bodies:
        assert keep(httpx.post(f"{base}/v1/jobs", json=body, headers=good)).status_code == 422
    for content in (API_TOKEN.encode(), b"{" + API_TOKEN.encode(), b"[" * 20 + API_TOKEN.encode()):
        answer = keep(
            httpx.post(
                f"{base}/v1/jobs",
                content=content,
                headers={**good, "Content-Type": "application/json"},
            )
        )
        assert answer.status_code == 400
    text_body = {**good, "Content-Type": "text/plain"}
    assert (
        keep(httpx.post(f"{base}/v1/jobs", content=API_TOKEN, headers=text_body)).status_code == 415
    )
    assert (
        keep(
            httpx.get(
                f"{base}/v1/jobs/{UNKNOWN_ID}/events",
                headers={"Last-Event-ID": API_TOKEN, **good},
            )
        ).status_code
        == 404
    )
    assert keep(httpx.get(f"{base}/v1/jobs/{job_id}/plots/x.png", headers=good)).status_code == 404
    assert keep(httpx.delete(f"{base}/v1/jobs/{job_id}", headers=good)).status_code == 405

    leaking = [body[:300] for body in bodies if API_TOKEN.encode() in body]
    assert leaking == []
    log = chatty_trainer.log_path.read_text(encoding="utf-8", errors="replace")
    assert "DEBUG" in log or "INFO" in log  # the log was captured at all
    assert [line for line in log.splitlines() if API_TOKEN in line] == []
    assert API_TOKEN[:12] not in log  # not even a recognisable part of it
