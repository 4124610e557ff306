"""Server-sent events of one job: an ``epoch`` event per finished epoch, then its final ``state``.

The stream is built from the job's record and epoch history on the store, so any worker of
any replica can serve it and a client that connects late gets the whole history replayed.
Each epoch event carries ``id: <epoch>``: a reconnecting client's ``Last-Event-ID`` resumes
after it. Comment lines keep idle connections (and the proxies on the way) open; the stream
ends once the final state is sent, or when the worker shuts down (the client reconnects).

Each open stream holds one of the worker's threads for as long as it lasts. ``StreamSlots``
bounds how many a worker holds (``--max-event-streams``, below ``--threads``), so the
threads left over always answer probes and API calls; a stream past the bound is refused
at once (503 with ``Retry-After``) instead of waiting, unanswered, for a thread.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from flask import Response
from pydantic import BaseModel, Field

from trainer_service.api.problems import Problem
from trainer_service.errors import JobNotFound
from trainer_service.runner.book import JobBook, epoch_rows

RETRY_MILLISECONDS = 2_000
BUSY_RETRY_AFTER_SECONDS: Final = 2
_EPOCH_ID = re.compile(r"[0-9]{1,9}")

# set when this worker is told to stop: open streams end at once (clients reconnect to a
# live worker with Last-Event-ID) instead of holding the shutdown for the grace period
STREAMS_CLOSING = threading.Event()


class ServerSentEvent(BaseModel):
    """One event of a stream (before OpenAPI 3.2, an event-stream's schema describes each)."""

    event: str = Field(description="epoch or trial, then the final state.")
    data: str = Field(description="One line of JSON: the epoch's losses, the trial or the state.")
    id: str | None = Field(None, description="Epochs: the epoch (Last-Event-ID resumes after it).")


EVENT_SCHEMA = ServerSentEvent.model_json_schema()


class StreamSlots:
    """At most ``limit`` event streams open at once in this worker."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    def open(self, events: Iterator[str]) -> HeldStream | None:
        """``events`` holding a slot until it is closed, or None when every slot is taken."""
        if not self._free.acquire(blocking=False):
            return None
        return HeldStream(events, self._free.release)


def event_stream(slots: StreamSlots, events: Iterator[str]) -> Response:
    """``events`` as a ``text/event-stream`` holding one of this worker's stream slots.

    Every event route answers through here, so ``--max-event-streams`` bounds them all:
    past the bound the answer is 503 with ``Retry-After`` at once.
    """
    stream = slots.open(events)
    if stream is None:
        raise Problem(
            503,
            f"this worker holds {slots.limit} event streams already; try again shortly",
            kind="too-many-streams",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_SECONDS)},
        )
    return Response(
        stream,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class HeldStream:
    """A stream's events that give their slot back on ``close``, which WSGI servers call
    whether the stream ended, broke, or was never read (a generator's ``finally`` would not
    run in that last case)."""

    def __init__(self, events: Iterator[str], release: Callable[[], None]) -> None:
        self._events = events
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> HeldStream:
        return self

    def __next__(self) -> str:
        return next(self._events)

    def close(self) -> None:
        """End the stream and free its slot (once)."""
        release, self._release = self._release, None
        if release is not None:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
            release()


def format_event(event: str, data: str, event_id: int | None = None) -> str:
    """One SSE message; ``data`` is JSON text on one line."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append("data: " + data)
    return "\n".join(lines) + "\n\n"


def last_event_id(header: str | None) -> int:
    """The epoch a reconnecting client saw last (0: start from the beginning)."""
    text = (header or "").strip()
    if not _EPOCH_ID.fullmatch(text):
        return 0  # not one of our ids: replay from the start
    return int(text)


@dataclass(frozen=True)
class Poll:
    """What one look at the store found for a stream: events to send, and whether it ends."""

    events: list[str] = field(default_factory=list)
    last: bool = False


def polled_stream(
    poll: Callable[[], Poll], *, poll_interval: float, keepalive: float
) -> Iterator[str]:
    """The loop every event stream shares: the reconnect hint, then each poll's events, a
    keep-alive comment after ``keepalive`` quiet seconds, until a poll is the last or this
    worker stops (``STREAMS_CLOSING``)."""
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    quiet_since = time.monotonic()
    while True:
        found = poll()
        for event in found.events:
            yield event
            quiet_since = time.monotonic()
        if found.last:
            return
        if time.monotonic() - quiet_since >= keepalive:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        if STREAMS_CLOSING.wait(poll_interval):
            return


def job_events(
    book: JobBook,
    job_id: str,
    *,
    after: int = 0,
    poll_interval: float = 0.25,
    keepalive: float = 15.0,
) -> Iterator[str]:
    """Yield SSE text for ``job_id`` until its final state (the caller checked it exists)."""
    sent = after
    progress = book.progress_tail(job_id)  # each poll reads only what was appended

    def poll() -> Poll:
        nonlocal sent
        try:
            # state first, history second: a final state read here means every epoch
            # the runner recorded before finishing is already in the history
            job = book.stored(job_id)
        except JobNotFound:
            return Poll(last=True)  # the record went away (store cleaned up)
        found = Poll(last=job.state.finished)
        for row in epoch_rows(progress.read(), sent):
            epoch = int(row["epoch"] or 0)
            payload = {
                "epoch": epoch,
                "epochs": job.progress.epochs,
                "loss": row["loss"],
                "val_loss": row["val_loss"],
            }
            found.events.append(format_event("epoch", compact_json(payload), event_id=epoch))
            sent = max(sent, epoch)
        if found.last:
            found.events.append(format_event("state", job.model_dump_json()))
        return found

    return polled_stream(poll, poll_interval=poll_interval, keepalive=keepalive)


def compact_json(document: object) -> str:
    """JSON on one line, as an event's ``data`` must be."""
    return json.dumps(document, separators=(",", ":"), allow_nan=False)
