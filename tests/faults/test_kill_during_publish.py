"""SIGKILL during export and publish: no broken version ever shows, debris is swept, serving goes on.

The cheap half kills a process that does nothing but publish copies of a real trained
version, at random moments, two dozen times; the costly half kills real training jobs of
the real local runner during their export/publish phase. A predictor serves the same store
under a steady load throughout.
"""

from __future__ import annotations

import functools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from predictor.predictor_harness import Launcher, add_version
from runner.runner_harness import RunnerProcess, children_of, wait_until_finished
from support import patient, wait_for

from faults.load import PredictLoad, summary
from squarenet.stack import running_trainer
from squarenet.store import TMP_PREFIX, ModelStore
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.book import JobBook

PUBLISH_LOOP = Path(__file__).with_name("publish_loop.py")
KILLS = 24
STEADY_RATE = 50.0  # calls/s, the load the promise names


def staging_debris(store: ModelStore) -> list[str]:
    """Hidden temp folders in the model folder (a revoked job's mark is a file, not debris)."""
    return sorted(
        p.name for p in store.model_dir().iterdir() if p.name.startswith(TMP_PREFIX) and p.is_dir()
    )


def assert_every_version_verifies(store: ModelStore) -> None:
    """No numbered version in the store fails verification."""
    _, broken = store.good_versions()
    assert broken == [], [str(b) for b in broken]


def exporting_or_done(store: ModelStore, book: JobBook, job_id: str) -> bool:
    """Whether the job has a staging folder (its export began) or has ended."""
    return any(job_id in name for name in staging_debris(store)) or book.get(job_id).state.finished


@pytest.mark.slow
def test_sigkill_at_random_moments_of_publishing_never_shows_a_broken_version(
    store: ModelStore, trained_version: Path, launcher: Launcher, tmp_path: Path
) -> None:
    add_version(store, trained_version)
    predictor = launcher.start(store)
    predictor.wait_serving()
    chance = random.Random(20261129)
    killed_mid_publish = 0
    with PredictLoad(f"127.0.0.1:{predictor.port}", 4, rate=STEADY_RATE) as load:
        for attempt in range(KILLS):
            tag = f"20260101T000000Z-{attempt:08x}"  # shaped like a job id: the sweep knows it
            publisher = subprocess.Popen(
                [sys.executable, str(PUBLISH_LOOP), str(store.root), str(trained_version), tag],
                stdout=subprocess.DEVNULL,
            )
            time.sleep(chance.uniform(0.15, 0.9))
            publisher.kill()
            publisher.wait(patient(10))
            assert_every_version_verifies(store)
            killed_mid_publish += any(tag in name for name in staging_debris(store))
        versions = store.list_versions()
        wait_for(
            lambda: predictor.metric("squarenet_predictor_current_version") == versions[-1],
            30,
            "the predictor to serve the newest version",
        )
    print(
        f"\nSIGKILL during publish: {KILLS} kills, {killed_mid_publish} left a half-written "
        f"staging folder, {len(versions)} versions published; load: {summary(load.calls)}"
    )
    assert killed_mid_publish > 0  # the kills did land in the middle of publishing
    assert load.failures() == []
    assert all(worker.versions_move_forward() for worker in load.workers)
    assert predictor.metric("squarenet_predictor_load_failures_total") == 0

    # Temp debris is cleaned when the trainer next starts on the store.
    with running_trainer(store.root, tmp_path / "trainer.log"):
        wait_for(lambda: staging_debris(store) == [], 30, "the staging debris to be swept")
    assert_every_version_verifies(store)


@pytest.mark.slow
def test_sigkill_of_real_training_jobs_while_they_export_and_publish(
    store: ModelStore, trained_version: Path, launcher: Launcher, tmp_path: Path
) -> None:
    add_version(store, trained_version)
    predictor = launcher.start(store)
    predictor.wait_serving()
    runner = RunnerProcess(store, tmp_path / "runner.log")
    book = JobBook(store)
    chance = random.Random(7)
    outcomes: list[str] = []
    try:
        with PredictLoad(f"127.0.0.1:{predictor.port}", 4, rate=STEADY_RATE) as load:
            for seed in range(3):
                params = TrainingParams(n_samples=200, epochs=3, batch_size=32, seed=seed)
                job = book.submit(params)
                wait_for(
                    functools.partial(exporting_or_done, store, book, job.id),
                    120,
                    "the job to start exporting",
                    every=0.005,
                )
                time.sleep(chance.uniform(0.0, 0.5))
                for pid in children_of(runner.pid):
                    os.kill(pid, signal.SIGKILL)
                ended = wait_until_finished(book, job.id)
                outcomes.append(f"{ended.state.value}:{ended.model_version}")
                if ended.state is RunState.SUCCEEDED:  # killed after the rename: a real version
                    assert ended.model_version is not None
                    store.verify_version("square", ended.model_version)
                else:
                    assert ended.state is RunState.FAILED
                    assert ended.error == "training process killed by SIGKILL (out of memory?)"
                    assert all(
                        store.read_metadata("square", v).get("job_id") != job.id
                        for v in store.list_versions()
                    )
                wait_for(lambda: staging_debris(store) == [], 10, "the job's staging removed")
                assert_every_version_verifies(store)
        print(f"\nreal jobs killed during export/publish: {outcomes}; load: {summary(load.calls)}")
        assert load.failures() == []
        assert all(worker.versions_move_forward() for worker in load.workers)
        assert predictor.metric("squarenet_predictor_load_failures_total") == 0
        assert runner.terminate() == 0
    finally:
        if runner.process.poll() is None:
            runner.kill()
