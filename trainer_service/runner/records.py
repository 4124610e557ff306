"""Job records and the files of a job on the store; no policy (that is ``book``).

Layout under ``<store>/jobs/``::

    <id>.json            the record (``Job``), replaced atomically; written by the job book only
    <id>/progress.jsonl  one line per finished epoch, then one result line; written by the job's
                         own process only (a single writer, whichever executor ran it)
    <id>/loss.png        the figures, drawn by the job's process
    <id>/fit.png
    <id>/fit.json        fit.png's curves as numbers (``GET /v1/jobs/{id}/fit``, the dashboard)
    <id>/checkpoint.npz  the training state after a recent epoch, while the job is unfinished
    <id>/cancel          present once a client asked to cancel the job

Job ids look like ``20261129T051500Z-3f9a1c2b``: URL-safe, sorted by creation time; a string
of any other shape is an unknown job, so no request ever builds a path from client text.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from squarenet.store import FileIdentity, ModelStore, file_identity, write_json_atomic
from trainer_service.lifecycle import EndReason, RunState, inferred_end
from trainer_service.params import TrainingParams

JOB_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
ARTIFACT_NAMES = frozenset({"loss.png", "fit.png", "fit.json"})


class Progress(BaseModel):
    """Epochs done out of epochs planned."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    epochs: int


class Job(BaseModel):
    """A training job as clients see it: ``model_dump(mode="json")`` is the REST shape."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    state: RunState
    params: TrainingParams
    progress: Progress
    metrics: dict[str, float] | None = None
    model_version: int | None = None
    error: str | None = None
    end_reason: EndReason | None = None
    """Why the job ended (null until it has): what a sweep reads, never ``error``'s words."""
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    sweep_id: str | None = None  # set on a sweep's trials
    resumes: int = 0
    """Times the job went back to QUEUED after its runner stopped or was lost while it
    trained; each time it resumed from its checkpoint (``training.checkpoint``)."""

    @model_validator(mode="before")
    @classmethod
    def _with_end_reason(cls, data: Any) -> Any:
        """A record written before jobs stored their end reason gets it inferred here."""
        if isinstance(data, dict) and data.get("end_reason") is None and "state" in data:
            with contextlib.suppress(ValueError, TypeError):
                end = inferred_end(RunState(data["state"]), data.get("error"))
                data = {**data, "end_reason": end}
        return data


@dataclass
class Report:
    """What a job's process wrote to its progress file: epochs, then (once) its result."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None

    @property
    def last_epoch(self) -> int:
        """The newest finished epoch (0 before the first)."""
        return int(self.epochs[-1]["epoch"]) if self.epochs else 0


def utc_now() -> str:
    """Now as RFC 3339 UTC, e.g. ``2026-11-29T05:15:00.123456Z`` (microseconds keep order)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def new_job_id(now: datetime | None = None) -> str:
    """A URL-safe id that sorts by creation time, e.g. ``20261129T051500Z-3f9a1c2b``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def trial_job_id(sweep_id: str, trial: int, attempt: int) -> str:
    """The job id of a sweep's trial's attempt: the same every time it is asked for.

    Whoever releases the trial (a finalizer that lost its Lease mid-pass, a pass that died
    and ran again) names the same job, and submitting a named job again is a no-op, so a
    trial never runs as two twin jobs. Shaped like any job id: the sweep's creation time,
    then hex from ``<sweep>-<trial>-<attempt>``.
    """
    day, clock = sweep_id.split("-")[:2]
    digest = hashlib.sha256(f"{sweep_id}-{trial}-{attempt}".encode()).hexdigest()[:8]
    return f"{day}T{clock}Z-{digest}"


def is_job_id(text: str) -> bool:
    """True when ``text`` is shaped like a job id (so it is safe as a file name)."""
    return JOB_ID_PATTERN.fullmatch(text) is not None


def finite_or_none(value: object) -> float | None:
    """JSON has no NaN or infinity: a diverged loss is recorded as null."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def finite_metrics(raw: object) -> dict[str, float]:
    """The finite numbers of a metrics mapping (of anything else: none)."""
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, value in raw.items() if (v := finite_or_none(value)) is not None}


def stored_ids(folder: Path, is_id: Callable[[str], bool]) -> list[str]:
    """The ids of the ``<id>.json`` records in ``folder``, sorted (ids sort by creation
    time); a name that is not an id is not a record, whatever else it is."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(
        record_id for name in names
        if name.endswith(".json") and is_id(record_id := name.removesuffix(".json"))
    )  # fmt: skip


class JobFiles:
    """Paths and plain reads and writes of a job's files."""

    def __init__(self, store: ModelStore) -> None:
        self.root = store.jobs_dir

    def record_path(self, job_id: str) -> Path:
        return self.root / f"{job_id}.json"

    def job_dir(self, job_id: str) -> Path:
        return self.root / job_id

    def progress_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "progress.jsonl"

    def checkpoint_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "checkpoint.npz"

    def cancel_path(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "cancel"

    def read(self, job_id: str) -> Job | None:
        """The record, or None when there is none (or it cannot be parsed)."""
        if not is_job_id(job_id):
            return None
        try:
            return Job.model_validate_json(self.record_path(job_id).read_bytes())
        except (FileNotFoundError, NotADirectoryError, ValidationError):
            return None

    def write(self, record: Job) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.record_path(record.id), record.model_dump(mode="json"))

    def records(self) -> list[Job]:
        """Every readable record, oldest first."""
        return [job for job_id in stored_ids(self.root, is_job_id) if (job := self.read(job_id))]

    def read_report(self, job_id: str) -> Report:
        """Every complete line of the progress file (a line being written is left out)."""
        return ProgressTail(self.progress_path(job_id)).read()


class ProgressTail:
    """A progress file read as it grows: each ``read`` parses only the lines appended since
    the last one, and none when the file's inode, size and mtime are as they were. A file
    that was replaced or truncated is read again from its start."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._seen: FileIdentity | None = None

    def read(self) -> Report:
        """What was appended since the last read (everything after a restart)."""
        report = Report()
        try:
            if file_identity(os.stat(self.path)) == self._seen:
                return report  # one stat: nothing was written since
            with self.path.open("rb") as handle:
                seen = file_identity(os.fstat(handle.fileno()))  # the very file read here
                if self._seen is None or seen[0] != self._seen[0] or seen[1] < self._offset:
                    self._offset = 0  # replaced or truncated: start over
                handle.seek(self._offset)
                chunk = handle.read()
        except (FileNotFoundError, NotADirectoryError):
            self._offset, self._seen = 0, None
            return report
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written waits for its end
        self._offset += len(complete)
        self._seen = seen
        for line in complete.decode("utf-8", errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict) and isinstance(row.get("result"), str):
                    report.result = row
                elif isinstance(row, dict) and isinstance(row.get("epoch"), int):
                    report.epochs.append(row)
        return report
