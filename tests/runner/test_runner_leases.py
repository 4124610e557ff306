"""The runner's record changes: one claimer per job, heartbeats, reaping lost jobs, cleanup."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.runner.book import JobBook
from trainer_service.runner.leases import Runner, RunnerBook
from trainer_service.runner.records import (
    JobFiles,
    JobRecord,
    JobState,
    Lease,
    Progress,
    format_time,
)

TINY = TrainingParams.model_validate({"n_samples": 200, "epochs": 3, "batch_size": 20, "seed": 1})


def runner(host: str = "node-a", pid: int = 1, runner_id: str = "r-a") -> Runner:
    return Runner(host=host, pid=pid, runner_id=runner_id)


def _claim_all(
    root: str, runner_id: str, results: multiprocessing.Queue[tuple[str, list[str]]]
) -> None:
    book = RunnerBook(ModelStore(root), Runner(host="node", pid=1, runner_id=runner_id))
    claimed = []
    while (record := book.claim_next()) is not None:
        claimed.append(record.id)
    results.put((runner_id, claimed))


def test_two_runners_claiming_at_once_take_each_job_exactly_once(store: ModelStore) -> None:
    book = JobBook(store, max_queued=30)
    submitted = {book.submit(TINY).id for _ in range(30)}
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[tuple[str, list[str]]] = context.Queue()
    claimers = [
        context.Process(target=_claim_all, args=(str(store.root), f"r{n}", results))
        for n in range(2)
    ]
    for claimer in claimers:
        claimer.start()
    claimed = dict(results.get(timeout=60) for _ in claimers)
    for claimer in claimers:
        claimer.join(timeout=10)
    everything = claimed["r0"] + claimed["r1"]
    assert sorted(everything) == sorted(submitted)  # none twice, none lost
    for runner_id, job_ids in claimed.items():
        for job_id in job_ids:
            record = book.files.read(job_id)
            assert record is not None
            assert record.lease is not None
            assert record.lease.runner_id == runner_id
    assert all(job.state is JobState.RUNNING for job in book.list())


def test_claim_takes_the_oldest_job_first(store: ModelStore) -> None:
    book = JobBook(store)
    first, second = book.submit(TINY), book.submit(TINY)
    runners = RunnerBook(store, runner())
    assert runners.claim_next().id == first.id  # type: ignore[union-attr]
    assert runners.claim_next().id == second.id  # type: ignore[union-attr]
    assert runners.claim_next() is None


def test_a_queued_cancel_and_a_claim_never_both_win(store: ModelStore) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    assert book.cancel(job.id).state is JobState.CANCELLED
    assert RunnerBook(store, runner()).claim_next() is None


def test_heartbeat_renews_the_lease_and_progress_only_for_the_owner(store: ModelStore) -> None:
    JobBook(store).submit(TINY)
    owner = RunnerBook(store, runner())
    record = owner.claim_next()
    assert record is not None
    beat = owner.heartbeat(record.id, Progress(epoch=2, epochs=3))
    assert beat is not None
    assert beat.progress.epoch == 2
    assert beat.lease is not None
    assert beat.lease.heartbeat_at >= record.lease.heartbeat_at  # type: ignore[union-attr]
    stranger = RunnerBook(store, runner(runner_id="r-b"))
    assert stranger.heartbeat(record.id) is None
    assert stranger.finish(record.id, JobState.FAILED, error="not mine") is None
    assert JobBook(store).get(record.id).state is JobState.RUNNING


def test_finish_records_the_outcome_and_drops_markers(store: ModelStore) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    owner = RunnerBook(store, runner())
    owner.claim_next()
    book.files.cancel_path(job.id).touch()
    done = owner.finish(job.id, JobState.SUCCEEDED, model_version=4, metrics={"loss": 0.1})
    assert done is not None
    assert done.lease is None
    shown = book.get(job.id)
    assert shown.state is JobState.SUCCEEDED
    assert shown.model_version == 4
    assert shown.metrics == {"loss": 0.1}
    assert shown.finished_at is not None
    assert not (book.files.running_dir / job.id).exists()
    assert not book.files.cancel_path(job.id).exists()


def _running_record(
    store: ModelStore, lease: Lease, state: JobState = JobState.RUNNING
) -> JobRecord:
    """A job claimed by a runner elsewhere (as its own dispatcher would have written it)."""
    book = JobBook(store)
    job = book.submit(TINY)
    files = JobFiles(store)
    (files.queue_dir / job.id).rename(files.running_dir / job.id)
    record = JobRecord.model_validate(
        {**job.model_dump(), "state": state, "lease": lease if state is JobState.RUNNING else None}
    )
    files.write(record)
    return record


def _lease(host: str, pid: int, age: float, runner_id: str = "gone") -> Lease:
    beat = format_time(datetime.now(UTC) - timedelta(seconds=age))
    return Lease(host=host, pid=pid, runner_id=runner_id, heartbeat_at=beat)


def test_reap_fails_a_job_whose_heartbeat_from_another_host_is_stale(store: ModelStore) -> None:
    stale = _running_record(store, _lease("node-b", 4242, age=120))
    fresh = _running_record(store, _lease("node-b", 4242, age=1))
    reaped = RunnerBook(store, runner()).reap(stale_after=30)
    assert [record.id for record in reaped] == [stale.id]
    job = JobBook(store).get(stale.id)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert job.error.startswith("trainer process lost: no heartbeat since ")
    assert JobBook(store).get(fresh.id).state is JobState.RUNNING


def test_reap_fails_a_job_of_a_dead_runner_on_this_host_at_once(store: ModelStore) -> None:
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True)  # fmt: skip
    dead_pid = int(finished.stdout)
    here = Runner.here()
    lost = _running_record(store, _lease(here.host, dead_pid, age=0))
    RunnerBook(store, here).reap(stale_after=3600)
    job = JobBook(store).get(lost.id)
    assert job.state is JobState.FAILED
    assert job.error == f"trainer process lost: pid {dead_pid} on {here.host} is gone"


def test_reap_fails_a_previous_start_that_had_our_pid(store: ModelStore) -> None:
    here = Runner.here()
    lost = _running_record(store, _lease(here.host, here.pid, age=0, runner_id="before-restart"))
    RunnerBook(store, here).reap(stale_after=3600)
    assert JobBook(store).get(lost.id).state is JobState.FAILED


def test_reap_keeps_our_own_and_live_local_runners_jobs(store: ModelStore) -> None:
    here = Runner.here()
    ours = _running_record(store, _lease(here.host, here.pid, age=0, runner_id=here.runner_id))
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        try:
            neighbour = _running_record(store, _lease(here.host, alive.pid, age=0))
            assert RunnerBook(store, here).reap(stale_after=3600) == []
        finally:
            alive.kill()
    assert JobBook(store).get(ours.id).state is JobState.RUNNING
    assert JobBook(store).get(neighbour.id).state is JobState.RUNNING


def test_reap_cleans_markers_of_finished_jobs(store: ModelStore) -> None:
    record = _running_record(store, _lease("node-b", 1, age=0), state=JobState.SUCCEEDED)
    assert RunnerBook(store, runner()).reap(stale_after=30) == []
    assert not (JobFiles(store).running_dir / record.id).exists()


def test_reaping_a_job_discards_its_staging_folders(store: ModelStore) -> None:
    stale = _running_record(store, _lease("node-b", 4242, age=120))
    staging = store.staging_dir("square", tag=stale.id)
    RunnerBook(store, runner()).reap(stale_after=30)
    assert not staging.exists()


def test_sweep_removes_staging_of_jobs_not_running_and_keeps_the_rest(store: ModelStore) -> None:
    running = _running_record(store, _lease("node-b", 4242, age=0))
    finished = _running_record(store, _lease("node-b", 1, age=0), state=JobState.FAILED)
    keep_running = store.staging_dir("square", tag=running.id)
    drop_finished = store.staging_dir("square", tag=finished.id)
    drop_unknown = store.staging_dir("square", tag="20200101T000000Z-00000000")
    keep_other = store.staging_dir("square", tag="someone-else")
    RunnerBook(store, runner()).sweep_staging()
    assert keep_running.exists()
    assert keep_other.exists()
    assert not drop_finished.exists()
    assert not drop_unknown.exists()


@pytest.mark.parametrize("state", [JobState.CANCELLED, JobState.FAILED])
def test_a_cancel_request_for_a_claimed_job_is_seen_by_its_runner(
    store: ModelStore, state: JobState
) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    owner = RunnerBook(store, runner())
    owner.claim_next()
    assert not owner.cancel_requested(job.id)
    book.cancel(job.id, timeout=0)
    assert owner.cancel_requested(job.id)
    owner.finish(job.id, state)
    assert not owner.cancel_requested(job.id)


def test_a_lost_job_with_a_waiting_cancel_ends_cancelled(store: ModelStore) -> None:
    lost = _running_record(store, _lease("node-b", 4242, age=120))
    assert JobBook(store).cancel(lost.id, timeout=0).state is JobState.RUNNING
    RunnerBook(store, runner()).reap(stale_after=30)
    job = JobBook(store).get(lost.id)
    assert job.state is JobState.CANCELLED
    assert job.error is None
    assert not JobFiles(store).cancel_path(lost.id).exists()


def test_a_lost_job_that_had_published_ends_succeeded_with_its_version(
    store: ModelStore,
) -> None:
    lost = _running_record(store, _lease("node-b", 4242, age=120))
    staging = store.staging_dir("square", tag=lost.id)
    (staging / "model.tflite").write_bytes(b"tflite")
    (staging / "saved_model.pb").write_bytes(b"saved")
    metadata = {"job_id": lost.id, "domain": [-5.0, 5.0], "metrics": {"mse_in_domain": 0.004}}
    version = store.publish_version(staging, metadata).version
    RunnerBook(store, runner()).reap(stale_after=30)
    job = JobBook(store).get(lost.id)
    assert job.state is JobState.SUCCEEDED
    assert job.model_version == version
    assert job.metrics == {"mse_in_domain": 0.004}
