"""The publish fence: a job that was cancelled, timed out or lost never publishes afterwards.

A job's process writes its version into one staging folder, ``<model>/.tmp-<job id>-run``
(``claim``), and publishes by renaming it to the next version number. Whoever ends the job
without success revokes it (``revoke``): it leaves the mark ``.tmp-<job id>-revoked``, then
renames the staging folder away. Both sides use single ``mkdir``s, renames and lookups, which
the file system orders; no lock is taken and no clock compared:

- revoked before the claim: the process sees the mark right after its ``mkdir`` and stops;
- revoked while it writes: its folder is gone, so its writes and final rename fail; a folder
  of that name made again meanwhile (TensorFlow's writer makes missing folders) is another
  inode, which ``check`` refuses;
- published before the revocation: the version stands and the job counts as SUCCEEDED.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from squarenet.store import TMP_PREFIX, BrokenVersion, ModelStore
from trainer_service.runner.records import finite_metrics

_PUBLISHED_LOOKBACK = 20  # versions searched for a job's own, newest first
_JOB_STAGING = re.compile("^" + re.escape(TMP_PREFIX) + r"([0-9]{8}T[0-9]{6}Z-[0-9a-f]{8})-")


class Revoked(Exception):
    """The job's staging name is fenced: this process must not publish."""


@dataclass(frozen=True)
class Claim:
    """A job's right to publish from its staging folder, as long as nobody revoked it."""

    path: Path
    mark: Path
    inode: int

    def check(self) -> None:
        """Raise Revoked unless the staging folder is still ours and unrevoked."""
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self.inode and not self.mark.exists():
                return
        raise Revoked("the job was stopped: it may no longer publish")


def _paths(store: ModelStore, model_name: str, job_id: str) -> tuple[Path, Path]:
    """The one staging folder a job may publish from, and the mark present once revoked."""
    base = store.model_dir(model_name) / f"{TMP_PREFIX}{job_id}"
    return Path(f"{base}-run"), Path(f"{base}-revoked")


def claim(store: ModelStore, model_name: str, job_id: str) -> Claim:
    """The job's side: create its staging folder, or raise Revoked when it was fenced.

    A folder of that name with no revocation mark is what an earlier process of the same job
    left (a pod the cluster replaced, stopped before it could clean up; one job has one
    process at a time): it is moved away and the name claimed anew. The checks after the
    ``mkdir`` still see a revocation that lands meanwhile."""
    path, mark = _paths(store, model_name, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        if mark.exists():
            raise Revoked(f"job {job_id} was stopped: it may no longer publish") from None
        _discard(path, job_id)
        try:
            path.mkdir()
        except FileExistsError:
            raise Revoked(f"job {job_id} has a staging folder already") from None
    found = Claim(path, mark, path.stat().st_ino)
    found.check()
    return found


def _discard(path: Path, job_id: str) -> None:
    """Move a staging folder away (one rename) and remove it; gone already is fine."""
    away = path.with_name(f"{TMP_PREFIX}{job_id}-discarded-{secrets.token_hex(4)}")
    try:
        os.rename(path, away)
    except FileNotFoundError:
        return
    shutil.rmtree(away, ignore_errors=True)


def revoke(store: ModelStore, model_name: str, job_id: str) -> None:
    """The finalizer's side: after this returns, the job can never publish."""
    path, mark = _paths(store, model_name, job_id)
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        return  # no model folder can exist there, so no staging folder either
    mark.touch()
    _discard(path, job_id)  # a half-written version nobody can publish now


def forget(store: ModelStore, model_name: str, job_id: str) -> None:
    """Remove what the fence left of a job whose processes are gone for good (retention)."""
    with contextlib.suppress(OSError, ValueError):
        path, mark = _paths(store, model_name, job_id)
        mark.unlink()
        shutil.rmtree(path, ignore_errors=True)


def sweep(store: ModelStore, running: set[str]) -> None:
    """Remove what jobs not in ``running`` left in the model folders (after a crash)."""
    for model_name in store.model_names():
        with contextlib.suppress(OSError):
            for entry in store.model_dir(model_name).iterdir():
                match = _JOB_STAGING.match(entry.name)
                if match is None or match.group(1) in running:
                    continue  # another publisher's folder, or a live job's
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def published_version(
    store: ModelStore, model_name: str, job_id: str, reported: object = None
) -> tuple[int, dict[str, float]] | None:
    """The version this job published and its metrics, if it got that far.

    ``reported`` is the version the job's process wrote in its result line: it is checked
    against that version's own metadata, however many versions landed after it. Without a
    report (the process died between its rename and its result line) the newest versions
    are searched.
    """
    if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 1:
        found = _version_of(store, model_name, job_id, reported)
        if found is not None:
            return found
    try:
        versions = store.list_versions(model_name)
    except (ValueError, OSError):
        return None
    for version in reversed(versions[-_PUBLISHED_LOOKBACK:]):
        if (found := _version_of(store, model_name, job_id, version)) is not None:
            return found
    return None


def _version_of(
    store: ModelStore, model_name: str, job_id: str, version: int
) -> tuple[int, dict[str, float]] | None:
    """``version`` and its metrics when its metadata names ``job_id``, else None."""
    try:
        metadata = store.read_metadata(model_name, version)
    except (BrokenVersion, ValueError, OSError):
        return None
    if metadata.get("job_id") != job_id:
        return None
    return version, finite_metrics(metadata.get("metrics"))
