"""Job records and their files on the shared store (the layout is documented in ``jobs``).

Every gunicorn worker and every trainer replica reads and writes the same files, so all state
lives here and every change of state happens under one lock file: ``fcntl`` locks work across
processes on one host and, through the NFS lock manager, across nodes sharing the volume.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import secrets
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from squarenet.store import ModelStore, write_json_atomic
from trainer_service.params import TrainingParams

JOB_ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
ARTIFACT_NAMES = frozenset({"loss.png", "fit.png"})
EPOCHS_FILE = "epochs.jsonl"
QUEUE_DIR = "queue"
RUNNING_DIR = "running"
LOCK_FILE = ".lock"


class JobState(StrEnum):
    """Where a job is in its life; the last three are final."""

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        """True once the job can no longer change."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Progress(BaseModel):
    """Epochs done out of epochs planned."""

    model_config = ConfigDict(frozen=True)

    epoch: int
    epochs: int


class Job(BaseModel):
    """A training job as clients see it: ``model_dump(mode="json")`` is the REST shape."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    state: JobState
    params: TrainingParams
    progress: Progress
    metrics: dict[str, float] | None = None
    model_version: int | None = None
    error: str | None = None
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    sweep_id: str | None = None


class Lease(BaseModel):
    """Who runs a RUNNING job, and when it last said it is alive.

    ``runner_id`` is new for every dispatcher start: after a container restart the new
    dispatcher may get the old one's host name and pid, and must still tell them apart.
    """

    model_config = ConfigDict(frozen=True)

    host: str
    pid: int
    runner_id: str
    heartbeat_at: str


class JobRecord(Job):
    """The stored record: the job plus the runner's lease (never shown to clients)."""

    lease: Lease | None = None

    @property
    def job(self) -> Job:
        """The client's view of this record."""
        return Job.model_construct(**{name: getattr(self, name) for name in Job.model_fields})


def utc_now() -> str:
    """Now as RFC 3339 UTC, e.g. ``2026-11-29T05:15:00.123456Z`` (microseconds keep order)."""
    return format_time(datetime.now(UTC))


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds and a ``Z``."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> datetime:
    """The inverse of ``format_time``."""
    return datetime.fromisoformat(text)


def new_job_id(now: datetime | None = None) -> str:
    """A URL-safe id that sorts by creation time, e.g. ``20261129T051500Z-3f9a1c2b``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def is_job_id(text: str) -> bool:
    """True when ``text`` is shaped like a job id (so it is safe as a file name)."""
    return JOB_ID_PATTERN.fullmatch(text) is not None


def finite_or_none(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a diverged loss is recorded as null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    """POSIX record locks do not exclude threads of one process: add a thread lock per file."""
    key = str(path.resolve())
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(key, threading.Lock())


class JobFiles:
    """Paths, the lock and plain reads and writes of job records; no policy."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self.root = store.jobs_dir

    # --- layout -----------------------------------------------------------------------

    def ensure_layout(self) -> None:
        """Create the jobs folders (idempotent; every writer calls it first)."""
        for folder in (self.root, self.queue_dir, self.running_dir):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def queue_dir(self) -> Path:
        """Markers of QUEUED jobs, one empty file per job."""
        return self.root / QUEUE_DIR

    @property
    def running_dir(self) -> Path:
        """Markers of claimed jobs; a claim is the rename of a queue marker into here."""
        return self.root / RUNNING_DIR

    def record_path(self, job_id: str) -> Path:
        """The job's JSON record."""
        return self.root / f"{job_id}.json"

    def artifacts_dir(self, job_id: str) -> Path:
        """The job's own folder: epochs.jsonl and the plots."""
        return self.root / job_id

    def epochs_path(self, job_id: str) -> Path:
        """Per-epoch history, one JSON object a line."""
        return self.artifacts_dir(job_id) / EPOCHS_FILE

    def cancel_path(self, job_id: str) -> Path:
        """Present while a cancel of a RUNNING job waits for its runner."""
        return self.root / f"{job_id}.cancel"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the jobs lock: every change of a job's state happens inside it."""
        self.ensure_layout()
        path = self.root / LOCK_FILE
        with _thread_lock(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o660)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the record lock

    # --- records ----------------------------------------------------------------------

    def read(self, job_id: str) -> JobRecord | None:
        """The record, or None when there is none (or it cannot be parsed)."""
        if not is_job_id(job_id):
            return None
        try:
            text = self.record_path(job_id).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return JobRecord.model_validate_json(text)
        except ValidationError:
            return None

    def write(self, record: JobRecord) -> None:
        """Replace the record atomically (call with the lock held)."""
        write_json_atomic(self.record_path(record.id), record.model_dump(mode="json"))

    def record_ids(self) -> list[str]:
        """Ids of every stored record, oldest first."""
        return _ids_in(self.root, suffix=".json")

    def queued_ids(self) -> list[str]:
        """Ids with a queue marker, oldest first."""
        return _ids_in(self.queue_dir)

    def running_ids(self) -> list[str]:
        """Ids with a running marker (claimed, not yet cleaned up)."""
        return _ids_in(self.running_dir)

    # --- epochs -----------------------------------------------------------------------

    def append_epochs(self, job_id: str, rows: list[dict[str, Any]]) -> None:
        """Append finished epochs in one write, so readers see whole lines."""
        if not rows:
            return
        path = self.epochs_path(job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "".join(json.dumps(row, allow_nan=False) + "\n" for row in rows)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(text)

    def read_epochs(self, job_id: str) -> list[dict[str, Any]]:
        """Every complete line of the history (a line being appended is left out)."""
        try:
            text = self.epochs_path(job_id).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return []
        rows = []
        for line in text.splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            with contextlib.suppress(ValueError):
                row = json.loads(line)
                if isinstance(row, dict):
                    rows.append(row)
        return rows


def _ids_in(folder: Path, suffix: str = "") -> list[str]:
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return []
    ids = []
    for name in names:
        if suffix and not name.endswith(suffix):
            continue
        job_id = name.removesuffix(suffix) if suffix else name
        if is_job_id(job_id):
            ids.append(job_id)
    return sorted(ids)
