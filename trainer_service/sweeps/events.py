"""Server-sent events of one sweep: a ``trial`` event per trial state change, then ``state``.

Built from the sweep record with its trials' jobs laid over it, so any worker of any
replica serves it. A poll parses the record only when its file was replaced, and reads
each unfinished trial's job record, never its progress file. A client that connects late first gets one event for every trial that
has left PENDING (the replay), then each change as it happens; the stream ends with the
final sweep once every trial has ended.
"""

from __future__ import annotations

from collections.abc import Iterator

from trainer_service.api.events import Poll, compact_json, format_event, polled_stream
from trainer_service.lifecycle import TrialState
from trainer_service.runner.book import JobBook
from trainer_service.sweeps.records import RecordWatch, SweepFiles
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
    sent: dict[int, TrialState] = {}
    counter = 0  # the trial events' ids, across polls
    watch = RecordWatch(files, sweep_id)

    def poll() -> Poll:
        nonlocal counter
        record = watch.read()
        if record is None:
            return Poll(last=True)  # deleted meanwhile: nothing more will come
        found = Poll(last=record.settled)
        trials = live_trials(record, book)
        for trial in trials:
            if sent.get(trial.number, TrialState.PENDING) is trial.state:
                continue
            sent[trial.number] = trial.state
            counter += 1
            event = format_event(
                "trial", compact_json(trial_document(record, trial)), event_id=counter
            )
            found.events.append(event)
        if found.last:
            document = sweep_document(record, trials, files.read_promotions(sweep_id))
            found.events.append(format_event("state", compact_json(document)))
        return found

    return polled_stream(poll, poll_interval=poll_interval, keepalive=keepalive)
