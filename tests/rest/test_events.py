"""GET /v1/jobs/{id}/events: epochs, then the final state; replay, resume and keep-alive."""

from __future__ import annotations

import json
import threading
import time

import jsonschema  # type: ignore[import-untyped]  # a schemathesis dependency, no stubs
import pytest
from flask import Flask
from flask.testing import FlaskClient
from pydantic import ValidationError

from rest.rest_helpers import TINY, MakeApp, parse_sse
from trainer_service.api.events import job_events
from trainer_service.api.services import services
from trainer_service.runner.book import JobBook
from trainer_service.runner.local import LocalExecutor
from trainer_service.settings import Settings


def book_of(app: Flask) -> JobBook:
    with app.app_context():
        return services().book


def epochs(*numbers: int) -> list[dict[str, object]]:
    return [{"epoch": n, "loss": 10.0 / n, "val_loss": 11.0 / n} for n in numbers]


def append_epochs(book: JobBook, job_id: str, rows: list[dict[str, object]]) -> None:
    """Epoch lines as the job's process appends them to its progress file."""
    path = book.files.progress_path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write("".join(json.dumps({**row, "epochs": 5}) + "\n" for row in rows))


def queued_job(client: FlaskClient) -> str:
    response = client.post("/v1/jobs", json=TINY)
    assert response.status_code == 202
    return str(response.get_json()["id"])


def test_finished_job_replays_its_history_then_the_final_state(
    app: Flask, client: FlaskClient
) -> None:
    job_id = queued_job(client)
    book = book_of(app)
    append_epochs(book, job_id, epochs(1, 2, 3))
    LocalExecutor(book).cancel(job_id)
    response = client.get(f"/v1/jobs/{job_id}/events")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    events = parse_sse(response.get_data(as_text=True))
    assert [e["event"] for e in events] == ["epoch", "epoch", "epoch", "state"]
    first = json.loads(events[0]["data"])
    assert first == {"epoch": 1, "epochs": 5, "loss": 10.0, "val_loss": 11.0}
    assert [e.get("id") for e in events[:3]] == ["1", "2", "3"]
    final = json.loads(events[-1]["data"])
    assert final["id"] == job_id and final["state"] == "CANCELLED"


def test_last_event_id_resumes_after_that_epoch(app: Flask, client: FlaskClient) -> None:
    job_id = queued_job(client)
    book = book_of(app)
    append_epochs(book, job_id, epochs(1, 2, 3))
    LocalExecutor(book).cancel(job_id)
    response = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "2"})
    events = parse_sse(response.get_data(as_text=True))
    assert [(e["event"], e.get("id")) for e in events] == [("epoch", "3"), ("state", None)]


def test_live_stream_follows_epochs_as_they_are_recorded(make_app: MakeApp) -> None:
    app = make_app(sse_poll_interval=0.01)
    client = app.test_client()
    job_id = queued_job(client)
    book = book_of(app)

    def runner() -> None:
        for n in (1, 2, 3, 4, 5):
            time.sleep(0.02)
            append_epochs(book, job_id, epochs(n))
        LocalExecutor(book).cancel(job_id)

    thread = threading.Thread(target=runner)
    thread.start()
    response = client.get(f"/v1/jobs/{job_id}/events", buffered=False)
    text = b"".join(response.iter_encoded()).decode()
    thread.join()
    events = parse_sse(text)
    assert [e.get("id") for e in events if e["event"] == "epoch"] == ["1", "2", "3", "4", "5"]
    assert events[-1]["event"] == "state"


def test_idle_stream_sends_keep_alive_comments(make_app: MakeApp) -> None:
    app = make_app(sse_poll_interval=0.01, sse_keepalive=0.05)
    client = app.test_client()
    job_id = queued_job(client)
    response = client.get(f"/v1/jobs/{job_id}/events", buffered=False)
    chunks = response.iter_encoded()
    seen = [next(chunks).decode() for _ in range(3)]
    response.close()
    assert seen[0].startswith("retry:")
    assert ": keep-alive\n\n" in seen[1:]


def test_events_match_the_openapi_document(app: Flask, client: FlaskClient) -> None:
    document = client.get("/openapi.json").get_json()
    operation = document["paths"]["/v1/jobs/{job_id}/events"]["get"]
    event_schema = operation["responses"]["200"]["content"]["text/event-stream"]["schema"]
    job_schema = {"$ref": "#/components/schemas/Job", "components": document["components"]}
    job_id = queued_job(client)
    book = book_of(app)
    append_epochs(book, job_id, epochs(1, 2))
    LocalExecutor(book).cancel(job_id)
    events = parse_sse(client.get(f"/v1/jobs/{job_id}/events").get_data(as_text=True))
    for event in events:
        jsonschema.validate(event, event_schema)
    for event in events[:-1]:
        assert set(json.loads(event["data"])) == {"epoch", "epochs", "loss", "val_loss"}
    jsonschema.Draft202012Validator(job_schema).validate(json.loads(events[-1]["data"]))


@pytest.mark.parametrize("header", ["", "abc", "-1", "²", "9" * 5000, "1.5", " 2x"])
def test_last_event_id_that_is_not_ours_replays_from_the_start(
    app: Flask, client: FlaskClient, header: str
) -> None:
    job_id = queued_job(client)
    book = book_of(app)
    append_epochs(book, job_id, epochs(1, 2))
    LocalExecutor(book).cancel(job_id)
    response = client.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": header})
    assert response.status_code == 200
    events = parse_sse(response.get_data(as_text=True))
    assert [e.get("id") for e in events] == ["1", "2", None]


def test_a_stream_past_the_bound_is_503_and_a_closed_one_frees_its_slot(make_app: MakeApp) -> None:
    client = make_app(threads=4, max_event_streams=1).test_client()
    job_id = queued_job(client)
    held = client.get(f"/v1/jobs/{job_id}/events", buffered=False)
    assert held.status_code == 200
    refused = client.get(f"/v1/jobs/{job_id}/events")
    assert refused.status_code == 503
    assert refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) > 0
    assert client.get("/healthz").status_code == 200
    held.close()  # what the server does when the client goes away
    again = client.get(f"/v1/jobs/{job_id}/events", buffered=False)
    assert again.status_code == 200
    again.close()


def test_the_stream_bound_must_leave_threads_free() -> None:
    with pytest.raises(ValidationError, match="must be below threads"):
        Settings.model_validate({"model_store": "/tmp", "threads": 4, "max_event_streams": 4})
    assert (
        Settings.model_validate({"model_store": "/tmp", "threads": 32}).event_streams_per_worker
        == 24
    )


def test_each_poll_parses_only_the_lines_appended_since_the_last(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    job_id = queued_job(client)
    book = book_of(app)
    append_epochs(book, job_id, epochs(1, 2, 3))
    parsed: list[int] = []
    loads = json.loads

    def counting(text: str | bytes, **kwargs: object) -> object:
        found = loads(text, **kwargs)  # type: ignore[arg-type]
        if isinstance(found, dict) and "epochs" in found:
            parsed.append(found["epoch"])
        return found

    monkeypatch.setattr(json, "loads", counting)
    stream = job_events(book, job_id, poll_interval=0, keepalive=0)

    def polls(count: int) -> list[str]:
        """The epoch ids sent over ``count`` polls (each poll ends with a keep-alive)."""
        ids: list[str] = []
        while count:
            event = next(stream)
            count -= event == ": keep-alive\n\n"
            ids += [e["id"] for e in parse_sse(event) if e["event"] == "epoch"]
        return ids

    next(stream)  # retry:
    assert polls(10) == ["1", "2", "3"]
    assert parsed == [1, 2, 3]  # each line once, however many polls
    append_epochs(book, job_id, epochs(4))
    assert polls(5) == ["4"]
    assert parsed == [1, 2, 3, 4]

    progress = book.files.progress_path(job_id)
    replaced = progress.with_name("replaced")
    replaced.write_text("".join(json.dumps({**row, "epochs": 5}) + "\n" for row in epochs(1, 5)))
    replaced.replace(progress)  # a new file: read from its start, sent epochs not again
    assert polls(3) == ["5"]
    progress.write_text(json.dumps({**epochs(6)[0], "epochs": 5}) + "\n")  # shorter: truncated
    assert polls(3) == ["6"]
    LocalExecutor(book).cancel(job_id)
    assert [e["event"] for e in parse_sse("".join(stream))] == ["state"]
