"""A version folder copied in by hand, slowly, while the predictor serves under load.

Each step of the copy leaves a different half-written folder: the predictor may try each
distinct state once, never each poll, and serves the version as soon as it is whole.
(Checksum failures, truncated .tflite and malformed metadata, each skipped and reported
once, are checked in tests/predictor/test_broken_versions.py.)
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from predictor.predictor_harness import POLL_INTERVAL, Launcher, add_version
from support import wait_for

from faults.load import PredictLoad, summary
from squarenet.store import METADATA_FILE, TFLITE_FILE, ModelStore

STEP_SECONDS = 0.5  # five polls between steps: a retry storm would show
LOADS = "squarenet_predictor_model_loads_total"
FAILURES = "squarenet_predictor_load_failures_total"


def copy_slowly(source: Path, target: Path) -> int:
    """Copy metadata first, then each file, the .tflite in two halves; return the step count."""
    steps = 0

    def pause() -> None:
        nonlocal steps
        steps += 1
        time.sleep(STEP_SECONDS)

    target.mkdir()
    shutil.copyfile(source / METADATA_FILE, target / METADATA_FILE)
    pause()
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir():
            (target / relative).mkdir()
        elif path.name == TFLITE_FILE:
            content = path.read_bytes()
            (target / relative).write_bytes(content[: len(content) // 2])
            pause()
            (target / relative).write_bytes(content)
            pause()
        elif path.name != METADATA_FILE:
            shutil.copyfile(path, target / relative)
            pause()
    return steps


@pytest.mark.slow
def test_a_slow_copy_by_hand_is_tried_once_per_state_and_served_when_whole(
    store: ModelStore, trained_version: Path, launcher: Launcher
) -> None:
    add_version(store, trained_version)
    predictor = launcher.start(store)
    predictor.wait_serving()
    loads_before = predictor.metric(LOADS)
    with PredictLoad(f"127.0.0.1:{predictor.port}", 4, rate=50) as load:
        # as ``cp -r`` does it: straight into the numbered folder, metadata saying version 2
        published = store.version_dir("square", 1)
        steps = copy_slowly(published, store.version_dir("square", 2))
        metadata = (store.version_dir("square", 2) / METADATA_FILE).read_text()
        (store.version_dir("square", 2) / METADATA_FILE).write_text(
            metadata.replace('"version": 1', '"version": 2')
        )
        steps += 1
        wait_for(
            lambda: predictor.metric("squarenet_predictor_current_version") == 2,
            10,
            "version 2 to be served once whole",
        )
    attempts = predictor.metric(LOADS) - loads_before + predictor.metric(FAILURES)
    polls = steps * STEP_SECONDS / float(POLL_INTERVAL)
    print(
        f"\nslow hand copy: {steps} steps over {steps * STEP_SECONDS:.1f} s (~{polls:.0f} polls), "
        f"{attempts:.0f} load attempts ({predictor.metric(FAILURES):.0f} failed); "
        f"load: {summary(load.calls)}"
    )
    assert load.failures() == []
    assert all(worker.versions_move_forward() for worker in load.workers)
    assert predictor.metric(FAILURES) >= 1  # the half-copied states were seen and skipped
    assert attempts <= steps + 1  # at most once per distinct state, not once per poll
    assert predictor.log().count("skipped broken version=2") == predictor.metric(FAILURES)
