"""Sweep records and their files on the shared store.

Layout under ``<store>/sweeps/``::

    <id>.json                  the record (``SweepRecord``), written by the controller only
    <id>.cancel                a client's cancel request, turned into the record's stop reason
    <id>.patch                 a client's new trial counts (``SweepPatch``), applied by the controller
    <id>/promotions.json       the versions promoted from it (written by the API)
    <id>/trial-<n>/fit.png     a finished trial's figure and epoch history, copied from its job
    <id>/trial-<n>/epochs.json   so the sweep's plots outlive the job book's forgetting
    <id>/plots/<name>-<k>.png  drawn plots, cached by the number of finished trials
    .lock                      (``local`` executor) the lock every controller pass takes

Sweep ids look like ``20261130-134800-3f9a1c2b``: lowercase so that ``sweep-<id>`` is a valid
model name, sorted by creation time; text of any other shape is an unknown sweep, so no
request builds a path from client text. Only the controller rewrites a record, so the API
never races it. With the ``local`` executor the controller takes ``local_lock`` (processes
and threads alike; before the job book's, never the other way round); with ``kubernetes`` it
runs only on the replica elected to finalize jobs and locks only its host (``host_lock``):
no lock on the shared volume.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from squarenet.store import (
    SWEEPS_DIR,
    FileIdentity,
    ModelStore,
    file_identity,
    host_lock,
    local_lock,
    write_json_atomic,
)
from trainer_service.lifecycle import RunState, TrialState
from trainer_service.runner.records import stored_ids
from trainer_service.sweeps.errors import SweepNotFound
from trainer_service.sweeps.spec import SweepSpec, Value

SWEEP_ID_PATTERN = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{8}$")
LOCK_FILE = ".lock"
PROMOTIONS = "promotions.json"


class Trial(BaseModel):
    """One point of the sweep and the job that runs it.

    ``job_id`` is recorded *before* the job is submitted under it (see ``controller``);
    ``submitted`` says the job book has it.
    """

    model_config = ConfigDict(frozen=True)

    number: int
    assignments: dict[str, Value]
    state: TrialState = TrialState.PENDING
    job_id: str | None = None
    submitted: bool = False
    earlier_job_ids: list[str] = []
    system_attrs: dict[str, Any] = {}  # what the search algorithm keeps of it (``search``)
    stopping_early: str | None = None  # why the early-stopping rule cancelled its job
    reason: str | None = None  # why it ended EARLY_STOPPED or SKIPPED
    metrics: dict[str, float] | None = None
    model_version: int | None = None
    error: str | None = None
    started_at: str | None = None
    finished_at: str | None = None


class Promotion(BaseModel):
    """A trial's model published as a version of the sweep's base model."""

    model_config = ConfigDict(frozen=True)

    trial: int
    job_id: str
    model_name: str
    version: int
    promoted_at: str


class SweepRecord(BaseModel):
    """The stored sweep: spec, state, every trial, and what was promoted."""

    model_config = ConfigDict(frozen=True)

    id: str
    state: RunState
    spec: SweepSpec
    trials: list[Trial]
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None
    stop_reason: str | None = None  # cancelled, failed, goal: no trial is released after
    message: str | None = None
    study_attrs: dict[str, Any] = {}  # what the search algorithm keeps of the whole sweep
    goal_from: int = 0  # trials numbered below this ended a run that a PATCH continued

    @property
    def model_name(self) -> str:
        """The model every trial publishes under (never the one being served)."""
        return sweep_model_name(self.id)

    def ordered(self, trial: Trial) -> list[tuple[str, Value]]:
        """A trial's assignments in the order the spec names the parameters."""
        return [(p.name, trial.assignments[p.name]) for p in self.spec.parameters]

    @property
    def settled(self) -> bool:
        """Final, and every trial with it: nothing will change again."""
        return self.state.finished and all(trial.state.finished for trial in self.trials)


_PROMOTIONS = TypeAdapter(list[Promotion])


def sweep_model_name(sweep_id: str) -> str:
    return f"sweep-{sweep_id}"


def new_sweep_id() -> str:
    """A URL-safe, lowercase id that sorts by creation time."""
    return f"{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


def is_sweep_id(text: str) -> bool:
    """True when ``text`` is shaped like a sweep id (so it is safe as a file name)."""
    return SWEEP_ID_PATTERN.fullmatch(text) is not None


# record files seen settled, by path, with the stat they had then: an atomic replace gives
# the file a new inode, so an unchanged stat means the settled record is still the same
_SETTLED: dict[str, FileIdentity] = {}
_SETTLED_GUARD = threading.Lock()


class SweepFiles:
    """Paths, the lock and plain reads and writes of sweep records; no policy."""

    def __init__(self, store: ModelStore, *, local_lock: bool = True) -> None:
        self.store = store
        self.root = store.root / SWEEPS_DIR
        self.local_lock = local_lock

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the sweeps lock: on ``.lock`` with ``local_lock``, otherwise on a file in the
        local temp folder (``host_lock``), so that nothing locks a file on a shared volume."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK_FILE
        with local_lock(path) if self.local_lock else host_lock(path):
            yield

    def patch_path(self, sweep_id: str) -> Path:
        return self.root / f"{sweep_id}.patch"

    def cancel_path(self, sweep_id: str) -> Path:
        return self.root / f"{sweep_id}.cancel"

    def read_promotions(self, sweep_id: str) -> list[Promotion]:
        """Every promotion of the sweep, newest last (none when the file is unreadable)."""
        try:
            return _PROMOTIONS.validate_json((self.folder(sweep_id) / PROMOTIONS).read_bytes())
        except (OSError, ValidationError):
            return []

    def add_promotion(self, sweep_id: str, promotion: Promotion) -> None:
        """Append a promotion (replaces the file atomically)."""
        promotions = [*self.read_promotions(sweep_id), promotion]
        self.folder(sweep_id).mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            self.folder(sweep_id) / PROMOTIONS, _PROMOTIONS.dump_python(promotions, mode="json")
        )

    def record_path(self, sweep_id: str) -> Path:
        return self.root / f"{sweep_id}.json"

    def folder(self, sweep_id: str) -> Path:
        """The sweep's own folder: copied trial artefacts and drawn plots."""
        return self.root / sweep_id

    def trial_dir(self, sweep_id: str, number: int) -> Path:
        """Where a finished trial's figure and epochs are kept."""
        return self.folder(sweep_id) / f"trial-{number}"

    def existing(self, sweep_id: str) -> SweepRecord:
        """The record; SweepNotFound (404) when there is none."""
        record = self.read(sweep_id)
        if record is None:
            raise SweepNotFound(sweep_id)
        return record

    def read(self, sweep_id: str) -> SweepRecord | None:
        """The record, or None when there is none (or it cannot be parsed)."""
        if not is_sweep_id(sweep_id):
            return None
        try:
            return _parsed(self.record_path(sweep_id).read_bytes())
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, record: SweepRecord) -> None:
        """Replace the record atomically (call with the lock held)."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.record_path(record.id), record.model_dump(mode="json"))

    def remove(self, sweep_id: str) -> None:
        """Forget a sweep: the record first (readers see it gone), then the rest."""
        for path in (self.record_path, self.cancel_path, self.patch_path):
            path(sweep_id).unlink(missing_ok=True)
        shutil.rmtree(self.folder(sweep_id), ignore_errors=True)

    def ids(self) -> list[str]:
        """Ids of every stored sweep, oldest first."""
        return stored_ids(self.root, is_sweep_id)

    def records(self) -> list[SweepRecord]:
        """Every readable record, oldest first."""
        found = [self.read(sweep_id) for sweep_id in self.ids()]
        return [record for record in found if record is not None]

    def unsettled(self) -> list[SweepRecord]:
        """Every record that may still change, oldest first: unsettled, or settled with a
        patch waiting. A settled record is parsed once per process; while its file keeps
        the stat it had then (every write replaces it), a pass costs it two stats."""
        ids = self.ids()
        found = [self._unless_settled(sweep_id) for sweep_id in ids]
        paths = {str(self.record_path(sweep_id)) for sweep_id in ids}
        with _SETTLED_GUARD:
            for gone in [path for path in _SETTLED if path.startswith(f"{self.root}{os.sep}")
                         and path not in paths]:  # fmt: skip
                del _SETTLED[gone]
        return [record for record in found if record is not None]

    def _unless_settled(self, sweep_id: str) -> SweepRecord | None:
        """The record, unless it was seen settled, is unchanged and has no patch waiting."""
        path = self.record_path(sweep_id)
        patched = self.patch_path(sweep_id).exists()
        try:
            if not patched and _SETTLED.get(str(path)) == file_identity(os.stat(path)):
                return None  # two stats: the record as it was when it settled
            with path.open("rb") as handle:
                info = os.fstat(handle.fileno())  # the stat of the very file read below
                record = _parsed(handle.read())
        except (FileNotFoundError, NotADirectoryError):
            return None
        if record is None or not record.settled:
            return record
        with _SETTLED_GUARD:
            _SETTLED[str(path)] = file_identity(info)
        return record if patched else None


def _parsed(text: str | bytes) -> SweepRecord | None:
    """A record from its JSON, or None when it cannot be parsed."""
    try:
        return SweepRecord.model_validate_json(text)
    except ValidationError:
        return None


class RecordWatch:
    """One sweep's record for a stream's polls: parsed again only when its file was
    replaced (one stat a poll otherwise)."""

    def __init__(self, files: SweepFiles, sweep_id: str) -> None:
        self.files = files
        self.sweep_id = sweep_id
        self._seen: FileIdentity | None = None
        self._record: SweepRecord | None = None

    def read(self) -> SweepRecord | None:
        """The record as it is now; None once it is gone."""
        try:
            identity = file_identity(os.stat(self.files.record_path(self.sweep_id)))
        except (FileNotFoundError, NotADirectoryError):
            return None
        if identity != self._seen:  # read after the stat: at worst one poll reads it twice
            self._seen, self._record = identity, self.files.read(self.sweep_id)
        return self._record
