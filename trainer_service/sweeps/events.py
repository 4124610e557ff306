"""Server-sent events of one sweep: a ``trial`` event per trial state change, then ``state``.

Built from the sweep record with its trials' jobs laid over it, so any worker of any
replica serves it. A poll parses the record only when its file was replaced, and reads
each unfinished trial's job record, never its progress file. A client that connects late first gets one event for every trial that
has left PENDING (the replay), then each change as it happens; the stream ends with the
final sweep once every trial has ended.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

from trainer_service.api.events import RETRY_MILLISECONDS, STREAMS_CLOSING, format_event
from trainer_service.runner.book import JobBook
from trainer_service.sweeps.records import RecordWatch, SweepFiles, TrialState
from trainer_service.sweeps.views import live_trials, sweep_document, trial_document


def sweep_events(
    files: SweepFiles,
    book: JobBook,
    sweep_id: str,
    *,
    poll_interval: float = 0.25,
    keepalive: float = 15.0,
) -> Iterator[str]:
    """Yield SSE text for ``sweep_id`` until it has settled (the caller checked it exists)."""
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    sent: dict[int, TrialState] = {}
    counter = 0
    quiet_since = time.monotonic()
    watch = RecordWatch(files, sweep_id)
    while True:
        record = watch.read()
        if record is None:
            return  # deleted meanwhile: nothing more will come
        trials = live_trials(record, book)
        for trial in trials:
            if sent.get(trial.number, TrialState.PENDING) is trial.state:
                continue
            sent[trial.number] = trial.state
            counter += 1
            yield format_event("trial", _json(trial_document(record, trial)), event_id=counter)
            quiet_since = time.monotonic()
        if record.settled:
            promotions = files.read_promotions(sweep_id)
            yield format_event("state", _json(sweep_document(record, trials, promotions)))
            return
        if time.monotonic() - quiet_since >= keepalive:
            yield ": keep-alive\n\n"
            quiet_since = time.monotonic()
        if STREAMS_CLOSING.wait(poll_interval):
            return


def _json(document: object) -> str:
    return json.dumps(document, separators=(",", ":"), allow_nan=False)
