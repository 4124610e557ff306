"""Server-sent events of one job: an ``epoch`` event per finished epoch, then its final ``state``.

The stream is built from the job's record and epoch history on the store, so any worker of
any replica can serve it and a client that connects late gets the whole history replayed.
Each epoch event carries ``id: <epoch>``: a reconnecting client's ``Last-Event-ID`` resumes
after it. Comment lines keep idle connections (and the proxies on the way) open; the stream
ends once the final state is sent, or when the worker shuts down (the client reconnects).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

from trainer_service.errors import JobNotFound
from trainer_service.runner.book import JobBook

RETRY_MILLISECONDS = 2_000
_EPOCH_ID = re.compile(r"[0-9]{1,9}")

# set when this worker is told to stop: open streams end at once (clients reconnect to a
# live worker with Last-Event-ID) instead of holding the shutdown for the grace period
STREAMS_CLOSING = threading.Event()


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


def job_events(
    book: JobBook,
    job_id: str,
    *,
    after: int = 0,
    poll_interval: float = 0.25,
    keepalive: float = 15.0,
) -> Iterator[str]:
    """Yield SSE text for ``job_id`` until its final state (the caller checked it exists)."""
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    sent = after
    quiet_since = time.monotonic()
    while True:
        try:
            # state first, history second: a final state read here means every epoch
            # the runner recorded before finishing is already in the history
            job = book.get(job_id)
            rows = book.epochs_since(job_id, sent)
        except JobNotFound:
            return  # the record went away (store cleaned up): nothing more will come
        for row in rows:
            epoch = int(row["epoch"] or 0)
            payload = {
                "epoch": epoch,
                "epochs": job.progress.epochs,
                "loss": row["loss"],
                "val_loss": row["val_loss"],
            }
            yield format_event("epoch", _json(payload), event_id=epoch)
            sent = max(sent, epoch)
            quiet_since = time.monotonic()
        if job.state.finished:
            yield format_event("state", job.model_dump_json())
            return
        if time.monotonic() - quiet_since >= keepalive:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        if STREAMS_CLOSING.wait(poll_interval):
            return


def _json(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False)
