"""Following a job over its event stream, including a stream that breaks mid-way.

The real trainer cannot be made to drop a stream on cue, so these tests answer the HTTP
calls with httpx.MockTransport standing in for it (same paths, same SSE text).
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from rich.console import Console

from squarenet.cli import progress
from squarenet.cli.errors import CliError, ExitCode
from squarenet.cli.progress import follow_job
from squarenet.cli.trainer_client import TrainerClient

JOB: dict[str, Any] = {"id": "j1", "state": "QUEUED", "params": {"epochs": 3}}
DONE = {**JOB, "state": "SUCCEEDED", "model_version": 7, "metrics": {"mse_in_domain": 0.01}}


def sse(*events: tuple[str, dict[str, Any], int | None]) -> httpx.Response:
    text = "retry: 2000\n\n: keep-alive\n\n"
    for name, data, event_id in events:
        text += f"event: {name}\n" + (f"id: {event_id}\n" if event_id else "")
        text += f"data: {json.dumps(data)}\n\n"
    return httpx.Response(200, headers={"Content-Type": "text/event-stream"}, text=text)


def epoch(n: int) -> tuple[str, dict[str, Any], int]:
    return ("epoch", {"epoch": n, "epochs": 3, "loss": 1.0 / n, "val_loss": None}, n)


@pytest.fixture(autouse=True)
def no_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "RECONNECT_PAUSE", 0.0)


def test_a_broken_stream_resumes_after_the_last_epoch_seen() -> None:
    asked: list[str | None] = []

    def trainer(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/jobs/j1/events"
        asked.append(request.headers.get("Last-Event-ID"))
        if len(asked) == 1:
            return sse(epoch(1), epoch(2))  # ends without the final state
        return sse(epoch(3), ("state", DONE, None))

    client = TrainerClient("http://trainer", transport=httpx.MockTransport(trainer))
    final = follow_job(client, JOB, Console(quiet=True))
    assert final == DONE
    assert asked == [None, "2"]


def test_a_stream_that_never_finishes_falls_back_to_reading_the_job() -> None:
    def trainer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            return sse(epoch(1))
        return httpx.Response(200, json=DONE)

    client = TrainerClient("http://trainer", transport=httpx.MockTransport(trainer))
    assert follow_job(client, JOB, Console(quiet=True)) == DONE


def test_a_trainer_that_stays_away_ends_with_unreachable() -> None:
    def trainer(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = TrainerClient("http://trainer", transport=httpx.MockTransport(trainer))
    with pytest.raises(CliError) as failed:
        follow_job(client, JOB, Console(quiet=True))
    assert failed.value.code is ExitCode.UNREACHABLE
    assert "http://trainer" in failed.value.message


def test_a_non_stream_answer_is_a_service_error() -> None:
    def trainer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"not": "a stream"})

    client = TrainerClient("http://trainer", transport=httpx.MockTransport(trainer))
    with pytest.raises(CliError) as failed:
        follow_job(client, JOB, Console(quiet=True))
    assert failed.value.code is ExitCode.SERVICE_ERROR


def test_many_breaks_that_each_bring_an_epoch_never_give_up() -> None:
    """Twelve breaks in all, never two in a row: the follower reaches the end."""
    epochs = 6
    calls: list[str | None] = []

    def trainer(request: httpx.Request) -> httpx.Response:
        calls.append(request.headers.get("Last-Event-ID"))
        seen = int(calls[-1] or 0)
        if len(calls) % 2:
            raise httpx.ReadError("connection reset", request=request)
        if seen < epochs:  # one new epoch, then the stream ends early
            event = ("epoch", {"epoch": seen + 1, "epochs": epochs, "loss": 1.0}, seen + 1)
            return sse(event)
        return sse(("state", DONE, None))

    client = TrainerClient("http://trainer", transport=httpx.MockTransport(trainer))
    assert follow_job(client, JOB, Console(quiet=True)) == DONE
    assert len(calls) > 2 * progress.RECONNECT_ATTEMPTS


def test_five_breaks_in_a_row_after_progress_give_up() -> None:
    calls = 0

    def trainer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            return sse(epoch(1))
        raise httpx.ConnectError("connection refused", request=request)

    client = TrainerClient("http://trainer", transport=httpx.MockTransport(trainer))
    with pytest.raises(CliError) as failed:
        follow_job(client, JOB, Console(quiet=True))
    assert failed.value.code is ExitCode.UNREACHABLE
    assert calls == progress.RECONNECT_ATTEMPTS  # the end of the first stream is break one


def test_a_trainer_full_of_streams_is_waited_out() -> None:
    calls = 0

    def trainer(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls <= 3:
            return httpx.Response(
                503, headers={"Retry-After": "0", "Content-Type": "application/problem+json"},
                json={"title": "Service Unavailable", "status": 503},
            )  # fmt: skip
        return sse(epoch(1), epoch(2), epoch(3), ("state", DONE, None))

    client = TrainerClient("http://trainer", transport=httpx.MockTransport(trainer))
    assert follow_job(client, JOB, Console(quiet=True)) == DONE
    assert calls == 4
