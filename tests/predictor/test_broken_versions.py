"""Broken versions are skipped, logged and counted once; the last good version keeps serving."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support import wait_for

from predictor.predictor_harness import (
    NOT_SERVING,
    POLLS,
    SERVICE,
    Launcher,
    Predictor,
    add_version,
)
from squarenet.store import METADATA_FILE, TFLITE_FILE, ModelStore
from squarenet.v1 import predictor_pb2

FAILURES = "squarenet_predictor_load_failures_total"


def move_in(store: ModelStore, folder: Path) -> None:
    """Rename a prepared folder into the store as its next version, all at once."""
    version = max(store.list_versions(), default=0) + 1
    metadata_path = folder / METADATA_FILE
    if metadata_path.exists():
        try:
            metadata = json.loads(metadata_path.read_text())
        except ValueError:
            pass
        else:
            metadata["version"] = version
            metadata_path.write_text(json.dumps(metadata))
    store.model_dir("square").mkdir(parents=True, exist_ok=True)
    folder.rename(store.version_dir("square", version))


def scratch_copy(store: ModelStore, source: Path) -> Path:
    """A published copy of ``source`` outside the store, ready to be damaged."""
    scratch = ModelStore(store.root.parent / f"scratch-{time.monotonic_ns()}")
    return scratch.version_dir("square", add_version(scratch, source))


def flip_a_byte(store: ModelStore, source: Path) -> None:
    """A version whose model.tflite no longer matches its sha256."""
    folder = scratch_copy(store, source)
    data = bytearray((folder / TFLITE_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / TFLITE_FILE).write_bytes(bytes(data))
    move_in(store, folder)


def truncated_tflite(store: ModelStore, source: Path) -> None:
    """A version whose checksums match a model.tflite cut in half: it verifies, cannot load."""
    staging = store.staging_dir(tag="test")
    shutil.copytree(source, staging, dirs_exist_ok=True)
    metadata = json.loads((staging / METADATA_FILE).read_text())
    (staging / METADATA_FILE).unlink()
    tflite = (staging / TFLITE_FILE).read_bytes()
    (staging / TFLITE_FILE).write_bytes(tflite[: len(tflite) // 2])
    for key in ("files", "version", "format", "model_name"):
        metadata.pop(key)
    store.publish_version(staging, metadata)


def malformed_metadata(store: ModelStore, source: Path) -> None:
    """A version whose metadata.json is not JSON."""
    folder = scratch_copy(store, source)
    (folder / METADATA_FILE).write_text('{"version": 2, "files": ')
    move_in(store, folder)


def half_copied_by_hand(store: ModelStore, source: Path) -> None:
    """A numbered folder copied by hand, not by the publisher, with model.tflite missing."""
    folder = scratch_copy(store, source)
    (folder / TFLITE_FILE).unlink()
    move_in(store, folder)


def serving_version_1(launcher: Launcher, store: ModelStore, source: Path) -> Predictor:
    add_version(store, source)
    predictor = launcher.start(store)
    predictor.wait_serving()
    return predictor


@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        (flip_a_byte, "model.tflite does not match its sha256"),
        (truncated_tflite, "cannot load"),
        (malformed_metadata, "metadata.json is unreadable"),
        (half_copied_by_hand, "model.tflite is missing"),
    ],
    ids=["bad-checksum", "truncated-tflite", "malformed-metadata", "half-copied"],
)
def test_a_broken_version_is_skipped_once_while_the_old_one_answers(
    launcher: Launcher,
    store: ModelStore,
    trained_versions: list[Path],
    breakage: Callable[[ModelStore, Path], None],
    reason: str,
) -> None:
    predictor = serving_version_1(launcher, store, trained_versions[0])
    breakage(store, trained_versions[1])
    wait_for(lambda: predictor.metric(FAILURES) == 1, 10, "the load failure to be counted")
    polls = predictor.metric(POLLS)
    wait_for(lambda: predictor.metric(POLLS) >= polls + 10, 20, "ten more looks at the store")
    assert predictor.metric(FAILURES) == 1  # the same broken folder was not tried again
    log = predictor.log()
    assert log.count("skipped broken version=2") == 1, log
    assert reason in log
    answer = predictor.stub.Predict(predictor_pb2.PredictRequest(x=[1.0]), timeout=5)
    assert answer.version == 1
    assert predictor.process.poll() is None


def test_a_fixed_version_is_tried_again_and_served(
    launcher: Launcher, store: ModelStore, trained_versions: list[Path]
) -> None:
    predictor = serving_version_1(launcher, store, trained_versions[0])
    flip_a_byte(store, trained_versions[1])
    wait_for(lambda: predictor.metric(FAILURES) == 1, 10, "the load failure to be counted")
    shutil.copyfile(trained_versions[1] / TFLITE_FILE, store.version_dir("square", 2) / TFLITE_FILE)
    wait_for(
        lambda: predictor.stub.Predict(predictor_pb2.PredictRequest(x=[1.0])).version == 2,
        10,
        "the repaired version 2 to be served",
    )
    assert predictor.metric(FAILURES) == 1


def test_a_broken_newest_version_falls_back_to_the_newest_good_one_at_start(
    launcher: Launcher, store: ModelStore, trained_versions: list[Path]
) -> None:
    add_version(store, trained_versions[0])
    flip_a_byte(store, trained_versions[1])
    predictor = launcher.start(store)
    predictor.wait_serving()
    assert predictor.stub.GetModel(predictor_pb2.GetModelRequest()).version == 1
    assert predictor.metric(FAILURES) == 1


def test_only_broken_versions_means_not_serving(
    launcher: Launcher, store: ModelStore, trained_versions: list[Path]
) -> None:
    malformed_metadata(store, trained_versions[0])
    predictor = launcher.start(store)
    wait_for(lambda: predictor.metric(FAILURES) == 1, 10, "the load failure to be counted")
    assert predictor.health_status("") == NOT_SERVING
    assert predictor.health_status(SERVICE) == NOT_SERVING
