"""The dispatcher as it runs in production: real processes, real training, real store files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support import wait_for

from runner.runner_harness import (
    JOB_TIMEOUT,
    LONG,
    QUICK,
    DispatcherProcess,
    children_of,
    process_gone,
    wait_until_finished,
    wait_until_training,
)
from squarenet.store import ModelStore
from trainer_service.errors import JobAlreadyFinished
from trainer_service.params import TrainingParams
from trainer_service.runner.book import JobBook
from trainer_service.runner.local import SHUTDOWN_ERROR
from trainer_service.runner.records import JobFiles, JobRecord, JobState, Lease, format_time

StartDispatcher = Callable[..., DispatcherProcess]


def staging_debris(store: ModelStore) -> list[str]:
    """Hidden temp folders left in the model folder."""
    folder = store.model_dir()
    if not folder.is_dir():
        return []
    return [entry.name for entry in folder.iterdir() if entry.name.startswith(".tmp-")]


@pytest.mark.slow
def test_a_small_job_succeeds_with_its_history_and_a_verified_version(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    dispatcher = start_dispatcher()
    book = JobBook(store)
    job = wait_until_finished(book, book.submit(QUICK).id)
    assert job.state is JobState.SUCCEEDED, job.error
    assert job.model_version == 1
    assert job.progress.epoch == QUICK.epochs
    assert job.started_at is not None
    assert job.finished_at is not None
    assert job.metrics is not None
    assert {"loss", "val_loss", "mse_in_domain", "mse_out_of_domain"} <= set(job.metrics)
    version = store.verify_version("square", 1)
    assert version.metadata["job_id"] == job.id
    history = book.epochs_since(job.id, 0)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    assert all(isinstance(row["loss"], float) for row in history)
    assert book.artifact_path(job.id, "loss.png").stat().st_size > 0
    assert book.artifact_path(job.id, "fit.png").stat().st_size > 0
    record = JobFiles(store).read(job.id)
    assert record is not None
    assert record.lease is None
    assert staging_debris(store) == []
    assert JobFiles(store).running_ids() == []
    assert f"job {job.id} SUCCEEDED version 1" in dispatcher.log()
    assert dispatcher.terminate() == 0


@pytest.mark.slow
def test_cancel_of_a_running_job_kills_it_and_publishes_nothing(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    dispatcher = start_dispatcher()
    book = JobBook(store)
    long_job = book.submit(LONG)
    waiting = book.submit(LONG)
    assert wait_until_training(book, long_job.id).state is JobState.RUNNING
    child = dispatcher.training_process()
    assert book.get(waiting.id).state is JobState.QUEUED  # one at a time by default

    cancelled = book.cancel(long_job.id, timeout=JOB_TIMEOUT)

    assert cancelled.state is JobState.CANCELLED
    assert cancelled.finished_at is not None
    assert process_gone(child)
    assert store.list_versions() == []
    assert staging_debris(store) == []
    assert not JobFiles(store).cancel_path(long_job.id).exists()
    with pytest.raises(JobAlreadyFinished) as refused:
        book.cancel(long_job.id)
    assert refused.value.job.state is JobState.CANCELLED
    # the dispatcher moves on to the next job
    assert wait_until_training(book, waiting.id).state is JobState.RUNNING
    assert book.cancel(waiting.id, timeout=JOB_TIMEOUT).state is JobState.CANCELLED


@pytest.mark.slow
def test_a_killed_training_process_fails_its_job_and_the_next_job_runs(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    dispatcher = start_dispatcher()
    book = JobBook(store)
    doomed = book.submit(LONG)
    after = book.submit(QUICK)
    wait_until_training(book, doomed.id)
    os.kill(dispatcher.training_process(), signal.SIGKILL)  # as the OOM killer does

    failed = wait_until_finished(book, doomed.id)
    assert failed.state is JobState.FAILED
    assert failed.error == "training process killed by SIGKILL (out of memory?)"
    assert wait_until_finished(book, after.id).state is JobState.SUCCEEDED
    assert store.verify_version("square", 1).metadata["job_id"] == after.id
    assert dispatcher.process.poll() is None


@pytest.mark.slow
def test_a_training_error_fails_the_job_with_its_message(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    dispatcher = start_dispatcher()
    (store.root / "blocked").write_text("a file where the model folder should be")
    params = QUICK.model_copy(update={"model_name": "blocked"})
    book = JobBook(store)
    job = wait_until_finished(book, book.submit(params).id)
    assert job.state is JobState.FAILED
    assert job.error is not None
    assert "Not a directory" in job.error
    assert "Traceback" not in job.error
    assert dispatcher.terminate() == 0


@pytest.mark.slow
def test_a_dispatcher_killed_mid_job_leaves_no_running_job_after_a_restart(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    first = start_dispatcher()
    book = JobBook(store)
    job = book.submit(LONG)
    wait_until_training(book, job.id)
    child = first.training_process()
    first.kill()
    wait_for(lambda: process_gone(child), 10, "the orphaned training process to die")
    assert book.get(job.id).state is JobState.RUNNING  # nobody has noticed yet
    half_written = store.staging_dir("square", tag=job.id)  # as an export cut short leaves it

    start_dispatcher()
    lost = wait_until_finished(book, job.id, timeout=30)

    assert lost.state is JobState.FAILED
    assert lost.error == f"trainer process lost: pid {first.pid} on {os.uname().nodename} is gone"
    assert not half_written.exists()
    assert store.list_versions() == []
    after = wait_until_finished(book, book.submit(QUICK).id)
    assert after.state is JobState.SUCCEEDED
    assert after.model_version == 1


@pytest.mark.slow
def test_sigterm_fails_the_running_job_as_interrupted_and_leaves_no_orphan(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    dispatcher = start_dispatcher()
    book = JobBook(store)
    job = book.submit(LONG)
    wait_until_training(book, job.id)
    child = dispatcher.training_process()

    assert dispatcher.terminate() == 0

    assert process_gone(child)
    interrupted = book.get(job.id)
    assert interrupted.state is JobState.FAILED
    assert interrupted.error == SHUTDOWN_ERROR
    assert store.list_versions() == []
    assert staging_debris(store) == []
    assert "dispatcher stopped" in dispatcher.log()


@pytest.mark.slow
def test_two_dispatchers_run_each_job_exactly_once(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    start_dispatcher()
    start_dispatcher()
    book = JobBook(store)
    ids = {book.submit(QUICK).id for _ in range(3)}
    for job_id in ids:
        assert wait_until_finished(book, job_id).state is JobState.SUCCEEDED
    assert store.list_versions() == [1, 2, 3]
    published = {store.verify_version("square", v).metadata["job_id"] for v in (1, 2, 3)}
    assert published == ids


@pytest.mark.slow
def test_max_concurrent_jobs_runs_that_many_at_once(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    start_dispatcher("--max-concurrent-jobs", "2")
    book = JobBook(store)
    jobs = [book.submit(LONG) for _ in range(3)]
    for job in jobs[:2]:
        assert wait_until_training(book, job.id).state is JobState.RUNNING
    assert book.get(jobs[2].id).state is JobState.QUEUED
    for job in jobs:
        assert book.cancel(job.id, timeout=JOB_TIMEOUT).state is JobState.CANCELLED


def _claimed_elsewhere(store: ModelStore, params: TrainingParams, heartbeat_age: float) -> str:
    """A RUNNING job whose runner lives on another node (written as that runner would)."""
    book = JobBook(store)
    job = book.submit(params)
    files = JobFiles(store)
    (files.queue_dir / job.id).rename(files.running_dir / job.id)
    beat = format_time(datetime.now(UTC) - timedelta(seconds=heartbeat_age))
    lease = Lease(host="another-node", pid=7, runner_id="elsewhere", heartbeat_at=beat)
    files.write(JobRecord.model_validate({**job.model_dump(), "state": "RUNNING", "lease": lease}))
    return job.id


def test_a_running_dispatcher_fails_a_job_whose_remote_heartbeat_stops(
    store: ModelStore, start_dispatcher: StartDispatcher
) -> None:
    already_stale = _claimed_elsewhere(store, QUICK, heartbeat_age=600)
    going_stale = _claimed_elsewhere(store, QUICK, heartbeat_age=0)
    start_dispatcher("--stale-after", "3")
    book = JobBook(store)
    for job_id in (already_stale, going_stale):
        job = wait_until_finished(book, job_id, timeout=30)
        assert job.state is JobState.FAILED
        assert job.error is not None
        assert job.error.startswith("trainer process lost: no heartbeat since ")
    assert store.list_versions() == []


@pytest.mark.parametrize(
    "flags",
    [
        ["--max-concurrent-jobs", "0"],
        ["--max-concurrent-jobs", "many"],
        ["--heartbeat-interval", "5", "--stale-after", "6"],
        ["--poll-interval", "0"],
    ],
)
def test_bad_flags_are_refused_with_a_message(
    store: ModelStore, start_dispatcher: StartDispatcher, flags: list[str]
) -> None:
    dispatcher = start_dispatcher(*flags)
    assert dispatcher.process.wait(timeout=30) == 2
    assert "error:" in dispatcher.log()
    assert "Traceback" not in dispatcher.log()


@pytest.mark.slow
def test_a_dispatcher_started_to_exit_with_its_parent_stops_when_the_parent_is_killed(
    store: ModelStore, tmp_path: Path
) -> None:
    launcher_code = (
        "import subprocess, sys\n"
        "dispatcher = subprocess.Popen([sys.executable, '-m', 'trainer_service.runner.local',"
        " '--model-store', sys.argv[1], '--poll-interval', '0.1', '--heartbeat-interval', '0.2',"
        " '--exit-with-parent'], stdout=open(sys.argv[2], 'ab'), stderr=subprocess.STDOUT)\n"
        "print(dispatcher.pid, flush=True)\n"
        "dispatcher.wait()\n"
    )
    log_path = tmp_path / "dispatcher.log"
    launcher = subprocess.Popen(
        [sys.executable, "-c", launcher_code, str(store.root), str(log_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        dispatcher_pid = int(launcher.stdout.readline())
        book = JobBook(store)
        job = book.submit(LONG)
        wait_until_training(book, job.id)
        child = wait_for(lambda: children_of(dispatcher_pid), JOB_TIMEOUT, "training process")[0]

        launcher.kill()  # the launcher dies without a chance to stop the dispatcher

        wait_for(lambda: process_gone(dispatcher_pid), 30, "the dispatcher to stop")
        assert process_gone(child)
        interrupted = book.get(job.id)
        assert interrupted.state is JobState.FAILED
        assert interrupted.error == SHUTDOWN_ERROR
        assert "parent process" in log_path.read_text()
    finally:
        launcher.kill()
        launcher.wait(timeout=10)


def test_a_store_it_cannot_write_to_stops_it_with_status_1(tmp_path: Path) -> None:
    blocked = tmp_path / "store-is-a-file"
    blocked.write_text("not a folder")
    log_path = tmp_path / "refused.log"
    with log_path.open("wb") as log:
        status = subprocess.run(
            [sys.executable, "-m", "trainer_service.runner.local", "--model-store", str(blocked)],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=60,
            check=False,
        ).returncode
    assert status == 1
    assert "cannot use the model store" in log_path.read_text()
    assert "Traceback" not in log_path.read_text()
