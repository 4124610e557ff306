"""Restarts: the trainer killed mid-job and started again; the predictor killed under load."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from predictor.predictor_harness import (
    Launcher,
    Predictor,
    add_version,
    store_state,
)
from runner.runner_harness import children_of, process_gone
from support import patient, wait_for

from faults.load import PredictLoad, summary
from squarenet.stack import running_trainer
from squarenet.store import TMP_PREFIX, ModelStore


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``."""
    found = []
    for child in children_of(pid):
        found += [child, *descendants(child)]
    return found


def restart_on_same_port(launcher: Launcher, store: ModelStore, old: Predictor) -> Predictor:
    """A new predictor process where ``old`` listened, as a restarted pod behind its Service."""
    return launcher.start(store, port=old.port, metrics_port=old.metrics_port, wait_listening=False)


# long enough to be killed mid-way, short enough to finish after the restart
LONG_JOB = {"n_samples": 1000, "epochs": 1500, "batch_size": 1, "seed": 2}


@pytest.mark.slow
def test_trainer_killed_mid_job_and_restarted_resumes_the_job_and_keeps_the_store_whole(
    store: ModelStore, trained_version: Path, tmp_path: Path
) -> None:
    add_version(store, trained_version)
    with running_trainer(store.root, tmp_path / "first.log") as first:
        job = httpx.post(f"{first.base_url}/v1/jobs", json=LONG_JOB, timeout=10).json()
        wait_for(
            lambda: (
                httpx.get(f"{first.base_url}/v1/jobs/{job['id']}", timeout=5).json()["progress"][
                    "epoch"
                ]
                >= 1
            ),
            120,
            "the job to train",
        )
        store.staging_dir(tag=job["id"])  # as an export cut short would leave it
        doomed = [first.process.pid, *descendants(first.process.pid)]
        assert len(doomed) >= 5, doomed  # master, two web workers, job runner, job process
        for pid in doomed:  # all at once, as when the node dies: nobody gets to clean up
            os.kill(pid, signal.SIGKILL)
        first.process.wait(patient(10))
        wait_for(lambda: all(process_gone(pid) for pid in doomed), 10, "every process gone")
    assert ModelStore(store.root).list_versions() == [1]

    with running_trainer(store.root, tmp_path / "second.log") as second:
        ended = wait_for(
            lambda: (
                body
                if (body := httpx.get(f"{second.base_url}/v1/jobs/{job['id']}", timeout=5).json())[
                    "state"
                ]
                not in {"QUEUED", "RUNNING"}
                else None
            ),
            180,
            "the lost job to be resumed and to finish",
        )
        models = httpx.get(f"{second.base_url}/v1/models", timeout=5).json()["models"]
        wait_for(
            lambda: not [p for p in store.model_dir().iterdir() if p.name.startswith(TMP_PREFIX)],
            30,
            "the killed job's staging folder to be swept",
        )
        log = second.log()
    print(f"\ntrainer killed mid-job, restarted: job {ended['state']}, resumed {ended['resumes']}x")
    assert ended["state"] == "SUCCEEDED", ended
    assert ended["resumes"] == 1
    assert f"job {job['id']} queued again (its job runner was lost)" in log
    assert sorted(m["version"] for m in models) == [1, 2]
    good, broken = store.good_versions()
    assert sorted(v.version for v in good) == [1, 2] and broken == []


@pytest.mark.slow
def test_predictor_killed_and_restarted_under_load_loses_no_call_of_a_retrying_client(
    store: ModelStore, trained_version: Path, launcher: Launcher
) -> None:
    add_version(store, trained_version)
    add_version(store, trained_version)
    before = store_state(store.root)
    first = launcher.start(store)
    first.wait_serving()
    target = f"127.0.0.1:{first.port}"
    with PredictLoad(target, 8, rate=200, retry_for=60) as load:
        wait_for(lambda: len(load.calls) > 200, 30, "the load to be under way")
        killed_at = time.monotonic()
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(patient(10))
        served = len(load.calls)
        restarted = restart_on_same_port(launcher, store, first)
        restarted.wait_serving(60)
        serving_at = time.monotonic()
        wait_for(lambda: len(load.calls) > served + 200, 30, "calls answered after the restart")
    outage = [c for c in load.calls if killed_at < c.started < serving_at]
    print(
        f"\npredictor SIGKILLed and restarted under a retrying load: {summary(load.calls)}; "
        f"{len(outage)} calls made while it was down, answered after "
        f"{max(c.latency for c in outage):.2f} s at most"
    )
    assert load.failures() == []
    assert outage  # calls were made while no predictor listened, and every one was answered
    assert all(worker.versions_move_forward() for worker in load.workers)
    assert {call.version for call in load.calls} == {2}
    assert store_state(store.root) == before  # the predictor never writes the store
