"""The model store: versioned models on a shared volume, published atomically.

Layout (a valid TensorFlow Serving ``model_base_path`` per model)::

    <root>/<model_name>/<version>/        saved_model.pb, variables/, model.tflite, metadata.json
    <root>/<model_name>/.tmp-<tag>-<rand>/ a version being written (never read)
    <root>/<model_name>/.claims/<version>  numbers taken by publishers: the high-water mark
    <root>/<model_name>/labels.json       version labels ({"stable": 3, "canary": 4})
    <root>/jobs/                          the trainer's job records
    <root>/sweeps/                        the trainer's sweep records

Readers never see a half-written version because a version only ever appears through a
rename of a complete, fsynced folder. Files that do not match ``metadata.json`` make a
version *broken*; readers skip it.

A publisher first claims its number by creating ``.claims/<n>`` exclusively (``O_EXCL``,
atomic on local disks and on NFS alike, no lock daemon needed) and fsyncs it, then renames
its folder to ``n``. The high-water mark is the largest claim; claims are only added (and
smaller ones pruned after a larger one exists), so the mark never goes down, and a number
stays taken after its version is deleted, crashed half-way, or two publishers raced.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

DEFAULT_MODEL_NAME = "square"
METADATA_FILE = "metadata.json"
TFLITE_FILE = "model.tflite"
SAVED_MODEL_FILE = "saved_model.pb"
TMP_PREFIX = ".tmp-"
CLAIMS_DIR = ".claims"
LEGACY_LAST_VERSION_FILE = ".last_version"  # the mark as stores before claims kept it
LABELS_FILE = "labels.json"
JOBS_DIR = "jobs"
SWEEPS_DIR = "sweeps"
RESERVED_NAMES = frozenset({JOBS_DIR, SWEEPS_DIR})
METADATA_FORMAT = 1

MODEL_NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,17}$")
_PUBLISH_ATTEMPTS = 100
_HASH_CHUNK = 1 << 20

Fingerprint = tuple[tuple[str, int, int, int, int], ...]
"""(path, inode, size, mtime, ctime) of every file of a folder: cheap to take, and it changes
whenever a file is replaced, rewritten or touched (ctime cannot be set back)."""


class StoreError(Exception):
    """A model-store operation failed for a reason worth telling the user."""


class BrokenVersion(StoreError):
    """A numbered version whose files are missing, malformed or do not match its metadata."""

    def __init__(self, model_name: str, version: int, reason: str) -> None:
        super().__init__(f"{model_name} version {version} is broken: {reason}")
        self.model_name = model_name
        self.version = version
        self.reason = reason


class UnknownVersion(StoreError):
    """No numbered folder holds this version (never published, or removed)."""

    def __init__(self, model_name: str, version: int) -> None:
        super().__init__(f"{model_name} has no version {version}")
        self.model_name = model_name
        self.version = version


@dataclass(frozen=True)
class ModelVersion:
    """A verified version: where it lives and what its metadata says."""

    model_name: str
    version: int
    path: Path
    metadata: Mapping[str, Any]
    # sealed files already parsed: the version is immutable while it verifies from cache
    _parsed: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def sealed_json(self, name: str) -> Any:
        """A JSON file the metadata lists (so checked against its sha256), parsed once per
        verification; None when it is not listed or not JSON."""
        if name not in self._parsed:
            found: Any = None
            if name in self.metadata["files"]:
                with contextlib.suppress(OSError, ValueError):
                    found = json.loads((self.path / name).read_text(encoding="utf-8"))
            self._parsed[name] = found
        return self._parsed[name]

    @property
    def domain(self) -> tuple[float, float]:
        """The closed training interval [lo, hi]; x outside it is extrapolated."""
        lo, hi = self.metadata["domain"]
        return float(lo), float(hi)

    @property
    def tflite_path(self) -> Path:
        """The LiteRT flatbuffer of this version."""
        return self.path / TFLITE_FILE


def validate_model_name(name: str) -> str:
    """Return ``name`` if it is a safe folder name for a model, else raise ValueError."""
    if name in RESERVED_NAMES:
        raise ValueError(f"invalid model name {name!r}: the store keeps its records there")
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise ValueError(f"invalid model name {name!r}: use [a-z0-9_-], at most 63 characters")
    return name


def validate_label(label: str) -> str:
    """Return ``label`` if it is a valid version label, else raise ValueError."""
    if not LABEL_PATTERN.fullmatch(label):
        raise ValueError(f"invalid label {label!r}: a lowercase letter, then up to 31 of [a-z0-9-]")
    return label


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_fingerprint(folder: Path) -> Fingerprint:
    """A folder's files by name and stat, without reading them (empty when it is gone)."""
    entries: list[tuple[str, int, int, int, int]] = []
    for dirpath, _dirnames, filenames in os.walk(folder):
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                info = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            entries.append(
                (os.path.relpath(path, folder), info.st_ino, info.st_size,
                 info.st_mtime_ns, info.st_ctime_ns)
            )  # fmt: skip
    return tuple(sorted(entries))


FileIdentity = tuple[int, int, int, int]


def file_identity(info: os.stat_result) -> FileIdentity:
    """Inode, size, mtime and ctime: a file replaced, rewritten, or rewritten with its mtime
    put back, shows in one of them; readers compare it to skip what has not changed."""
    return (info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _file_stat(path: str) -> FileIdentity | None:
    try:
        return file_identity(os.stat(path, follow_symlinks=False))
    except OSError:
        return None


@dataclass(frozen=True)
class _Verified:
    """What ``verify_version`` found, with the stat of every file the answer depends on:
    metadata.json and the files it lists (others never change the answer)."""

    paths: tuple[str, ...]
    stats: tuple[FileIdentity | None, ...]
    outcome: ModelVersion | str

    def holds(self) -> bool:
        """True while none of those files changed: a few stats, no walk, no read (a listing
        asks this of every version, so the loop stays plain)."""
        for path, kept in zip(self.paths, self.stats, strict=True):
            try:
                info = os.stat(path, follow_symlinks=False)
            except OSError:
                if kept is not None:
                    return False
                continue
            if kept != file_identity(info):
                return False
        return True


def _files_that_matter(folder: Path) -> tuple[str, ...]:
    """metadata.json and the files it lists inside the folder (just itself when unreadable)."""
    metadata = folder / METADATA_FILE
    listed: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        document = json.loads(metadata.read_text(encoding="utf-8"))
        files = document.get("files") if isinstance(document, dict) else None
        if isinstance(files, dict):
            listed = sorted(
                str(folder / name)
                for name in files
                if isinstance(name, str) and _is_inside(folder, folder / name)
            )
    return (str(metadata), *listed)


def _files_under(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            yield path


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder below ``folder`` (folder itself included) to disk."""
    for path in folder.rglob("*"):
        if not path.is_symlink():
            _fsync_path(path)
    _fsync_path(folder)


def write_json_atomic(path: Path, document: Mapping[str, Any] | list[Any]) -> None:
    """Write JSON next to ``path``, fsync, then rename over it: readers see old or new, whole."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2, sort_keys=True, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)


class ModelStore:
    """One shared volume holding every model's versions and the trainer's job records."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        # what verify_version found, per version, for the files as they were then
        self._verified: dict[tuple[str, int], _Verified] = {}
        self._verified_lock = threading.Lock()

    # --- layout -----------------------------------------------------------------------

    def model_dir(self, model_name: str = DEFAULT_MODEL_NAME) -> Path:
        """The TensorFlow Serving ``model_base_path`` of a model."""
        return self.root / validate_model_name(model_name)

    def version_dir(self, model_name: str, version: int) -> Path:
        """Where a version lives (whether or not it exists)."""
        return self.model_dir(model_name) / str(version)

    @property
    def jobs_dir(self) -> Path:
        """Where the trainer keeps job records."""
        return self.root / JOBS_DIR

    def model_names(self) -> list[str]:
        """Every model that has a folder in the store, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            entry.name
            for entry in self.root.iterdir()
            if entry.is_dir()
            and entry.name not in RESERVED_NAMES
            and MODEL_NAME_PATTERN.fullmatch(entry.name)
        )

    def list_versions(self, model_name: str = DEFAULT_MODEL_NAME) -> list[int]:
        """Numbered version folders of a model, ascending; not verified."""
        folder = self.model_dir(model_name)
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return []
        return sorted(
            int(entry.name)
            for entry in entries
            if _VERSION_PATTERN.fullmatch(entry.name) and entry.is_dir(follow_symlinks=False)
        )

    # --- reading ----------------------------------------------------------------------

    def read_metadata(self, model_name: str, version: int) -> dict[str, Any]:
        """A version's metadata.json, checked for shape but not against the files."""
        path = self.version_dir(model_name, version) / METADATA_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise BrokenVersion(model_name, version, f"{METADATA_FILE} is missing") from exc
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise BrokenVersion(
                model_name, version, f"{METADATA_FILE} is unreadable: {exc}"
            ) from exc
        _check_metadata_shape(model_name, version, document)
        return dict(document)

    def verify_version(self, model_name: str, version: int) -> ModelVersion:
        """Check every file against metadata.json's sha256; raise BrokenVersion on mismatch.

        Hashing is the expensive part, so the answer is kept with the stat of the files it
        depends on and given again, without reading a byte, while none of them has changed.
        """
        key = (model_name, version)
        with self._verified_lock:
            cached = self._verified.get(key)
        if cached is None or not cached.holds():
            cached = self._verify_now(model_name, version)
        if isinstance(cached.outcome, str):
            raise BrokenVersion(model_name, version, cached.outcome)
        return cached.outcome

    def _verify_now(self, model_name: str, version: int) -> _Verified:
        """Hash the version; keep the answer when its files held still while we read."""
        paths = _files_that_matter(self.version_dir(model_name, version))
        before = tuple(map(_file_stat, paths))
        outcome: ModelVersion | str
        try:
            outcome = self._check_files(model_name, version)
        except BrokenVersion as exc:
            outcome = exc.reason
        found = _Verified(paths, before, outcome)
        if found.holds():
            with self._verified_lock:
                self._verified[(model_name, version)] = found
        return found

    def _check_files(self, model_name: str, version: int) -> ModelVersion:
        """Read and hash every file of a version now."""
        metadata = self.read_metadata(model_name, version)
        folder = self.version_dir(model_name, version)
        for relative, expected in metadata["files"].items():
            path = folder / relative
            if not _is_inside(folder, path):
                raise BrokenVersion(model_name, version, f"file {relative!r} escapes the version")
            try:
                actual = sha256_file(path)
            except FileNotFoundError as exc:
                raise BrokenVersion(model_name, version, f"{relative} is missing") from exc
            except OSError as exc:
                raise BrokenVersion(
                    model_name, version, f"{relative} is unreadable: {exc}"
                ) from exc
            if actual != expected:
                raise BrokenVersion(model_name, version, f"{relative} does not match its sha256")
        return ModelVersion(model_name, version, folder, metadata)

    def good_versions(
        self, model_name: str = DEFAULT_MODEL_NAME, *, newest: int | None = None
    ) -> tuple[list[ModelVersion], list[BrokenVersion]]:
        """Verified versions, newest first (at most ``newest``), and the broken ones met on the way."""
        good: list[ModelVersion] = []
        broken: list[BrokenVersion] = []
        for version in reversed(self.list_versions(model_name)):
            if newest is not None and len(good) >= newest:
                break
            try:
                good.append(self.verify_version(model_name, version))
            except BrokenVersion as exc:
                broken.append(exc)
        return good, broken

    def latest_version(self, model_name: str = DEFAULT_MODEL_NAME) -> ModelVersion | None:
        """The newest version that verifies, or None when there is none."""
        good, _ = self.good_versions(model_name, newest=1)
        return good[0] if good else None

    def read_labels(self, model_name: str = DEFAULT_MODEL_NAME) -> dict[str, int]:
        """The model's version labels; {} when none. Malformed entries are left out.

        Raises OSError when the file exists but cannot be read, and StoreError when it is
        not a JSON object: a reader then keeps the labels it knew.
        """
        path = self.model_dir(model_name) / LABELS_FILE
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (UnicodeDecodeError, ValueError) as exc:
            raise StoreError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(document, dict):
            raise StoreError(f"{path} is not a JSON object")
        return {
            label: version
            for label, version in document.items()
            if isinstance(label, str)
            and LABEL_PATTERN.fullmatch(label)
            and isinstance(version, int)
            and not isinstance(version, bool)
            and version > 0
        }

    def set_label(self, model_name: str, label: str, version: int) -> dict[str, int]:
        """Point ``label`` at a good ``version``; return every label of the model.

        Raises ValueError for a bad label, UnknownVersion or BrokenVersion for the version.
        """
        validate_label(label)
        if version not in self.list_versions(model_name):
            raise UnknownVersion(model_name, version)
        self.verify_version(model_name, version)
        return self._update_labels(model_name, label, version)

    def remove_label(self, model_name: str, label: str) -> bool:
        """Remove ``label``; False when the model had no such label."""
        validate_label(label)
        if label not in self.read_labels(model_name):
            return False
        self._update_labels(model_name, label, None)
        return True

    def _update_labels(self, model_name: str, label: str, version: int | None) -> dict[str, int]:
        """Read, change one label, write atomically, all under this host's label lock.

        The lock (``host_lock``) is on a file in the local temp folder, never on the shared
        volume (no NFS locks): writers on one host (threads, gunicorn workers) never lose
        each other's changes. Writers on different hosts are not serialised: the last
        whole-file write wins, which for a label moved by hand is the intended outcome.
        """
        path = self.model_dir(model_name) / LABELS_FILE
        with host_lock(path):
            labels = self.read_labels(model_name)
            if version is None:
                labels.pop(label, None)
            else:
                labels[label] = version
            write_json_atomic(path, labels)
            return labels

    # --- writing ----------------------------------------------------------------------

    def staging_dir(self, model_name: str = DEFAULT_MODEL_NAME, tag: str = "") -> Path:
        """A new hidden folder on the same volume to write a version into before publishing."""
        safe_tag = re.sub(r"[^A-Za-z0-9_-]", "", tag)[:64]
        folder = self.model_dir(model_name) / f"{TMP_PREFIX}{safe_tag}-{secrets.token_hex(6)}"
        folder.mkdir(parents=True)
        return folder

    def publish_version(
        self, staging: Path, metadata: Mapping[str, Any], model_name: str = DEFAULT_MODEL_NAME
    ) -> ModelVersion:
        """Seal ``staging`` with metadata.json and rename it to the next free version number.

        ``metadata`` gets ``format``, ``model_name``, ``version`` and ``files`` (sha256 of
        every file) filled in here. On a collision with another publisher the number is
        taken again, so concurrent publishers end with distinct versions and none is lost.
        """
        model_dir = self.model_dir(model_name)
        if staging.parent.resolve() != model_dir.resolve():
            raise StoreError(f"staging folder {staging} is not inside {model_dir}")
        document = dict(metadata)
        document.update(format=METADATA_FORMAT, model_name=model_name)
        document["files"] = {
            path.relative_to(staging).as_posix(): sha256_file(path)
            for path in _files_under(staging)
            if path.name != METADATA_FILE
        }
        for _ in range(_PUBLISH_ATTEMPTS):
            version = self._claim_next_version(model_name)
            document["version"] = version
            write_json_atomic(staging / METADATA_FILE, document)
            fsync_tree(staging)
            try:
                os.rename(staging, model_dir / str(version))
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # a folder copied in by hand holds this number: claim the next
                raise
            _fsync_path(model_dir)
            self._prune_claims(model_name, below=version)
            return ModelVersion(model_name, version, model_dir / str(version), document)
        raise StoreError(f"could not find a free version number for {model_name}")

    def discard_staging(
        self,
        model_name: str = DEFAULT_MODEL_NAME,
        *,
        tag: str | None = None,
        older_than: float | None = None,
    ) -> list[Path]:
        """Remove temp folders (of one tag, or older than ``older_than`` seconds); return them."""
        folder = self.model_dir(model_name)
        if not folder.is_dir():
            return []
        prefix = TMP_PREFIX if tag is None else f"{TMP_PREFIX}{tag}-"
        now = time.time()
        removed = []
        for entry in folder.iterdir():
            if not entry.name.startswith(prefix) or not entry.is_dir():
                continue
            with contextlib.suppress(FileNotFoundError):
                if older_than is not None and now - entry.stat().st_mtime < older_than:
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        return removed

    def high_water_mark(self, model_name: str = DEFAULT_MODEL_NAME) -> int:
        """The largest version number ever taken for the model (0: none); it never goes down."""
        claims = self.model_dir(model_name) / CLAIMS_DIR
        try:
            taken = [int(name) for name in os.listdir(claims) if _VERSION_PATTERN.fullmatch(name)]
        except FileNotFoundError:
            taken = []
        return max([*taken, self._legacy_high_water_mark(model_name)])

    def _claim_next_version(self, model_name: str) -> int:
        """Take the next free number by creating its claim exclusively, durably."""
        claims = self.model_dir(model_name) / CLAIMS_DIR
        claims.mkdir(exist_ok=True)
        for _ in range(_PUBLISH_ATTEMPTS):
            version = max([*self.list_versions(model_name), self.high_water_mark(model_name)]) + 1
            try:
                fd = os.open(claims / str(version), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue  # another publisher claimed it between our look and our create
            os.fsync(fd)
            os.close(fd)
            _fsync_path(claims)
            return version
        raise StoreError(f"could not claim a version number for {model_name}")

    def _prune_claims(self, model_name: str, *, below: int) -> None:
        """Drop claims smaller than ``below`` (a larger one exists, so the mark stays)."""
        claims = self.model_dir(model_name) / CLAIMS_DIR
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(claims):
                if _VERSION_PATTERN.fullmatch(name) and int(name) < below:
                    with contextlib.suppress(FileNotFoundError):
                        (claims / name).unlink()

    def _legacy_high_water_mark(self, model_name: str) -> int:
        try:
            path = self.model_dir(model_name) / LEGACY_LAST_VERSION_FILE
            return int(path.read_text(encoding="ascii").strip() or 0)
        except (FileNotFoundError, ValueError, UnicodeDecodeError):
            return 0


LOCK_POLL_SECONDS = 0.01
"""How often a waiter retries a lock another holder has (``flock`` is tried, not waited on)."""


def local_lock(path: Path) -> FileLock:
    """The one lock of this host on ``path``: exclusive among its processes and threads.

    A ``flock`` on the file (never take one on a shared volume: no NFS locks). One instance
    per path in a process, with a per-thread state: threads of one process exclude each other
    like processes do, and the thread that holds the lock may take it again (reentrant).
    ``acquire(blocking=False)`` tries once and raises ``filelock.Timeout`` when it is taken.
    """
    return FileLock(path, mode=0o660, is_singleton=True, poll_interval=LOCK_POLL_SECONDS)


def host_lock(path: Path) -> FileLock:
    """``local_lock`` on a file in the local temp folder named after ``path`` (a store file)."""
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    return local_lock(Path(tempfile.gettempdir()) / f"squarenet-{key}.lock")


def _is_inside(folder: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _check_metadata_shape(model_name: str, version: int, document: Any) -> None:
    def broken(reason: str) -> BrokenVersion:
        return BrokenVersion(model_name, version, f"{METADATA_FILE}: {reason}")

    if not isinstance(document, dict):
        raise broken("not a JSON object")
    if document.get("version") != version:
        raise broken(f"says version {document.get('version')!r}, folder is {version}")
    files = document.get("files")
    if not isinstance(files, dict) or TFLITE_FILE not in files or SAVED_MODEL_FILE not in files:
        raise broken(f"'files' must list {TFLITE_FILE} and {SAVED_MODEL_FILE} with their sha256")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise broken("'files' must map paths to sha256 strings")
    domain = document.get("domain")
    if (
        not isinstance(domain, list)
        or len(domain) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in domain)
        or not domain[0] <= domain[1]
    ):
        raise broken("'domain' must be [lo, hi] with lo <= hi")
