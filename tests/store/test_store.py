"""The model store: atomic publish, verification, and what readers see while writers work."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import queue
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Event as EventType
from pathlib import Path

import pytest
from filelock import Timeout
from support import patient

from squarenet.store import (
    LABELS_FILE,
    METADATA_FILE,
    SAVED_MODEL_FILE,
    TFLITE_FILE,
    BrokenVersion,
    ModelStore,
    StoreError,
    UnknownVersion,
    local_lock,
    validate_model_name,
)


def stage(
    store: ModelStore, tag: str = "job", payload: bytes = b"tflite", model: str = "square"
) -> Path:
    """A staging folder holding stand-in model files (bytes, not a real model: the store hashes files)."""
    folder = store.staging_dir(model, tag=tag)
    (folder / TFLITE_FILE).write_bytes(payload)
    (folder / SAVED_MODEL_FILE).write_bytes(b"saved-model-" + payload)
    (folder / "variables").mkdir()
    (folder / "variables" / "variables.index").write_bytes(b"index")
    return folder


def publish(store: ModelStore, tag: str = "job", payload: bytes = b"tflite") -> int:
    metadata = {"job_id": tag, "domain": [-5.0, 5.0], "metrics": {"mse_in_domain": 0.004}}
    return store.publish_version(stage(store, tag, payload), metadata).version


def test_publish_numbers_versions_and_records_checksums(store: ModelStore) -> None:
    assert store.latest_version() is None
    assert publish(store, "a") == 1
    assert publish(store, "b") == 2
    assert store.list_versions() == [1, 2]
    latest = store.latest_version()
    assert latest is not None
    assert latest.version == 2
    assert latest.domain == (-5.0, 5.0)
    assert set(latest.metadata["files"]) == {
        TFLITE_FILE,
        SAVED_MODEL_FILE,
        "variables/variables.index",
    }
    assert latest.metadata["model_name"] == "square"
    assert not [p for p in store.model_dir().iterdir() if p.name.startswith(".tmp-")]


def test_versions_are_never_reused_after_the_newest_is_deleted(store: ModelStore) -> None:
    publish(store, "a")
    publish(store, "b")
    shutil.rmtree(store.version_dir("square", 2))
    assert publish(store, "c") == 3


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: (d / TFLITE_FILE).write_bytes(b"tampered"), "does not match"),
        (lambda d: (d / TFLITE_FILE).unlink(), "missing"),
        (lambda d: (d / METADATA_FILE).write_text("{not json"), "unreadable"),
        (lambda d: (d / METADATA_FILE).unlink(), "missing"),
        (lambda d: (d / METADATA_FILE).write_text("[]"), "not a JSON object"),
        (lambda d: _edit_metadata(d, version=7), "says version 7"),
        (lambda d: _edit_metadata(d, domain=[5, -5]), "domain"),
        (lambda d: _edit_metadata(d, files={TFLITE_FILE: "0" * 64}), "files"),
        (lambda d: _edit_metadata(d, files={**_files(d), "../../escape": "0" * 64}), "escapes"),
    ],
)
def test_a_damaged_version_is_broken_and_skipped(store: ModelStore, damage, reason: str) -> None:  # type: ignore[no-untyped-def]
    publish(store, "good", b"one")
    publish(store, "bad", b"two")
    damage(store.version_dir("square", 2))
    with pytest.raises(BrokenVersion, match=reason):
        store.verify_version("square", 2)
    good, broken = store.good_versions()
    assert [v.version for v in good] == [1]
    assert [b.version for b in broken] == [2]
    latest = store.latest_version()
    assert latest is not None and latest.version == 1


def _files(folder: Path) -> dict[str, str]:
    return dict(json.loads((folder / METADATA_FILE).read_text())["files"])


def _edit_metadata(folder: Path, **changes: object) -> None:
    document = json.loads((folder / METADATA_FILE).read_text())
    document.update(changes)
    (folder / METADATA_FILE).write_text(json.dumps(document))


def test_hidden_and_stray_entries_are_not_versions(store: ModelStore) -> None:
    publish(store)
    stage(store, "half-written")
    (store.model_dir() / "notes.txt").write_text("hello")
    (store.model_dir() / "007").mkdir()
    (store.model_dir() / "abc").mkdir()
    assert store.list_versions() == [1]
    assert store.model_names() == ["square"]


def test_discard_staging_removes_one_jobs_debris_only(store: ModelStore) -> None:
    mine = stage(store, "job-1")
    other = stage(store, "job-2")
    removed = store.discard_staging(tag="job-1")
    assert removed == [mine]
    assert not mine.exists() and other.exists()
    assert store.discard_staging(older_than=3600) == []
    assert store.discard_staging() == [other]


def test_staging_outside_the_model_folder_is_refused(store: ModelStore, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(StoreError):
        store.publish_version(elsewhere, {"domain": [0, 1]})


@pytest.mark.parametrize("name", ["", "Square", "../x", "a/b", "jobs", "x" * 64, ".hidden"])
def test_unsafe_model_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        validate_model_name(name)


def _publish_many(root: str, tag: str, count: int, results: multiprocessing.Queue[int]) -> None:
    store = ModelStore(root)
    for index in range(count):
        results.put(publish(store, f"{tag}-{index}", f"{tag}-{index}".encode()))


def test_concurrent_publishers_get_distinct_versions_and_lose_nothing(store: ModelStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = ctx.Queue()
    per_writer = 15
    writers = [
        ctx.Process(target=_publish_many, args=(str(store.root), tag, per_writer, results))
        for tag in ("w1", "w2")
    ]
    for writer in writers:
        writer.start()
    versions = [results.get(timeout=60) for _ in range(2 * per_writer)]
    for writer in writers:
        writer.join(timeout=patient(30))
        assert writer.exitcode == 0
    assert sorted(versions) == list(range(1, 2 * per_writer + 1))
    assert store.list_versions() == sorted(versions)
    jobs = {store.verify_version("square", v).metadata["job_id"] for v in versions}
    assert len(jobs) == 2 * per_writer
    assert not [p for p in store.model_dir().iterdir() if p.name.startswith(".tmp-")]


def _delete_until_stopped(root: str, stop: EventType, deleted: multiprocessing.Queue[int]) -> None:
    """Remove every version folder as soon as it shows: the newest is deleted over and over."""
    store = ModelStore(root)
    gone = 0
    while not stop.is_set():
        for version in store.list_versions():
            shutil.rmtree(store.version_dir("square", version), ignore_errors=True)
            gone += 1
    deleted.put(gone)


def test_no_number_is_handed_out_twice_while_the_newest_keeps_being_deleted(
    store: ModelStore,
) -> None:
    """Three publishers and a deleter: every publish gets a number nobody got before, and the
    high-water mark only ever rises."""
    ctx = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = ctx.Queue()
    deleted: multiprocessing.Queue[int] = ctx.Queue()
    stop = ctx.Event()
    per_writer, tags = 25, ("w1", "w2", "w3")
    deleter = ctx.Process(target=_delete_until_stopped, args=(str(store.root), stop, deleted))
    writers = [
        ctx.Process(target=_publish_many, args=(str(store.root), tag, per_writer, results))
        for tag in tags
    ]
    publish(store, "first")
    deleter.start()
    for writer in writers:
        writer.start()
    marks = []
    try:
        versions: list[int] = []
        while len(versions) < len(tags) * per_writer:
            marks.append(store.high_water_mark())
            with contextlib.suppress(queue.Empty):
                versions.append(results.get(timeout=0.01))
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=patient(60))
        deleter.join(timeout=patient(60))
    assert deleted.get(timeout=10) > 0
    assert all(writer.exitcode == 0 for writer in writers)
    assert len(set(versions)) == len(versions), sorted(versions)
    assert 1 not in versions
    assert marks == sorted(marks)
    assert store.high_water_mark() == max(versions)
    assert publish(store, "after") == max(versions) + 1


def _scan_until_stopped(
    root: str, scanning: EventType, stop: EventType, seen: multiprocessing.Queue[int]
) -> None:
    store = ModelStore(root)
    scans = 0
    while not stop.is_set():
        for version in store.list_versions():
            store.verify_version("square", version)  # raises on a partial version
        scans += 1
        scanning.set()
    seen.put(scans)


def test_a_reader_never_sees_a_partial_version(store: ModelStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    scanning, stop = ctx.Event(), ctx.Event()
    seen: multiprocessing.Queue[int] = ctx.Queue()
    reader = ctx.Process(target=_scan_until_stopped, args=(str(store.root), scanning, stop, seen))
    reader.start()
    try:
        # A spawned reader takes a while to start on a busy machine: publish only once it
        # scans, so the publishes below always race a reader.
        assert scanning.wait(patient(60)), "the reader never scanned"
        for index in range(40):
            publish(store, f"job-{index}", os.urandom(256 * 1024))
    finally:
        stop.set()
    scans = seen.get(timeout=patient(60))
    reader.join(timeout=patient(30))
    assert reader.exitcode == 0, "the reader met a version that failed verification"
    assert scans > 0
    assert store.list_versions() == list(range(1, 41))


# --- version labels -------------------------------------------------------------------


def test_labels_are_stored_atomically_and_read_back(store: ModelStore) -> None:
    first, second = publish(store), publish(store)
    assert store.read_labels() == {}
    assert store.set_label("square", "stable", first) == {"stable": first}
    assert store.set_label("square", "canary", second) == {"stable": first, "canary": second}
    assert store.remove_label("square", "canary") is True
    assert store.remove_label("square", "canary") is False
    assert store.read_labels() == {"stable": first}
    leftovers = [p.name for p in store.model_dir().iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_label_needs_a_published_good_version(store: ModelStore) -> None:
    version = publish(store)
    with pytest.raises(UnknownVersion):
        store.set_label("square", "stable", version + 1)
    (store.version_dir("square", version) / TFLITE_FILE).write_bytes(b"changed")
    with pytest.raises(BrokenVersion):
        store.set_label("square", "stable", version)
    with pytest.raises(ValueError, match="invalid label"):
        store.set_label("square", "Stable", version)


def test_malformed_entries_in_labels_json_are_left_out(store: ModelStore) -> None:
    publish(store)
    (store.model_dir() / LABELS_FILE).write_text(
        json.dumps({"stable": 1, "Bad": 1, "zero": 0, "flag": True, "text": "1"}), encoding="utf-8"
    )
    assert store.read_labels() == {"stable": 1}
    (store.model_dir() / LABELS_FILE).write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(StoreError):
        store.read_labels()


def test_concurrent_label_writers_on_one_host_lose_no_change(store: ModelStore) -> None:
    versions = [publish(store) for _ in range(2)]
    names = [f"label-{index}" for index in range(12)]

    def set_one(name: str) -> None:
        store.set_label("square", name, versions[hash(name) % 2])

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(set_one, names))
    assert sorted(store.read_labels()) == sorted(names)


_TRY_LOCK = """
import sys
from pathlib import Path
from filelock import Timeout
from squarenet.store import local_lock
try:
    local_lock(Path(sys.argv[1])).acquire(blocking=False)
except Timeout:
    print("taken")
else:
    print("free")
"""


def other_process_finds(path: Path) -> str:
    """What a non-blocking try of ``local_lock(path)`` finds in another process."""
    return subprocess.run(
        [sys.executable, "-c", _TRY_LOCK, str(path)], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_local_lock_excludes_other_threads_and_processes_and_is_reentrant_in_its_thread(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.lock"
    held, done = threading.Event(), threading.Event()

    def holder() -> None:
        with local_lock(path), local_lock(path):  # the holding thread takes it again
            held.set()
            done.wait()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait()
    try:
        with pytest.raises(Timeout):
            local_lock(path).acquire(blocking=False)  # another thread of this process
        assert other_process_finds(path) == "taken"
    finally:
        done.set()
        thread.join()
    assert other_process_finds(path) == "free"
    with local_lock(path):
        pass
