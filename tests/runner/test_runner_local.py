"""The local executor as it runs in production: real processes, real training, real store files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support import wait_for

from runner.runner_harness import (
    JOB_TIMEOUT,
    LONG,
    QUICK,
    RESUMABLE,
    RunnerProcess,
    process_gone,
    wait_until_finished,
    wait_until_training,
)
from squarenet.store import TMP_PREFIX, ModelStore
from trainer_service.errors import JobAlreadyFinished
from trainer_service.lifecycle import RunState
from trainer_service.runner.book import MAX_RESUMES, TIME_LIMIT, JobBook
from trainer_service.runner.local import LocalExecutor, pool_warm
from trainer_service.runner.records import JobFiles
from trainer_service.training.checkpoint import Checkpoint

StartRunner = Callable[..., RunnerProcess]
pytestmark = pytest.mark.slow


def staging_debris(store: ModelStore) -> list[str]:
    """Temp folders left in the model folder (a revoked job's mark is a file, and the
    store's own ``.claims`` folder of version numbers is not debris)."""
    folder = store.model_dir()
    if not folder.is_dir():
        return []
    return [e.name for e in folder.iterdir() if e.is_dir() and e.name.startswith(TMP_PREFIX)]


def test_a_small_job_succeeds_with_its_history_and_a_verified_version(
    store: ModelStore, start_runner: StartRunner
) -> None:
    runner = start_runner()
    book = JobBook(store)
    job = wait_until_finished(book, LocalExecutor(book).submit(QUICK).id)
    assert job.state is RunState.SUCCEEDED, job.error
    assert job.model_version == 1
    assert job.progress.epoch == QUICK.epochs
    assert job.started_at is not None and job.finished_at is not None
    assert job.metrics is not None
    assert {"loss", "val_loss", "mse_in_domain", "mse_out_of_domain"} <= set(job.metrics)
    assert store.verify_version("square", 1).metadata["job_id"] == job.id
    assert [row["epoch"] for row in book.epochs_since(job.id, 0)] == [1, 2, 3]
    assert book.artifact_path(job.id, "loss.png").stat().st_size > 0
    assert book.artifact_path(job.id, "fit.png").stat().st_size > 0
    result = JobFiles(store).read_report(job.id).result
    assert result is not None and result["result"] == "succeeded" and result["version"] == 1
    assert staging_debris(store) == []
    assert f"job {job.id} SUCCEEDED: version 1" in runner.log()
    assert runner.terminate() == 0


def test_a_warm_process_waits_for_the_next_job_and_each_process_trains_one(
    store: ModelStore, start_runner: StartRunner
) -> None:
    runner = start_runner()
    spare = wait_for(runner.job_processes, JOB_TIMEOUT, "the warm job process")
    book = JobBook(store)
    first = LocalExecutor(book).submit(QUICK)
    assert runner.training_process(first.id) == spare[0]
    assert wait_until_finished(book, first.id).state is RunState.SUCCEEDED
    wait_for(lambda: process_gone(spare[0]), 30, "the used process to exit")
    second = LocalExecutor(book).submit(QUICK)
    assert runner.training_process(second.id) != spare[0]
    assert wait_until_finished(book, second.id).state is RunState.SUCCEEDED
    assert store.list_versions() == [1, 2]


def test_cancel_of_a_running_job_kills_it_and_publishes_nothing(
    store: ModelStore, start_runner: StartRunner
) -> None:
    runner = start_runner()
    book = JobBook(store)
    executor = LocalExecutor(book)
    long_job = executor.submit(LONG)
    waiting = executor.submit(LONG)
    assert wait_until_training(book, long_job.id).state is RunState.RUNNING
    child = runner.training_process(long_job.id)
    assert book.get(waiting.id).state is RunState.QUEUED  # one at a time by default

    executor.cancel(long_job.id)  # answered at once: the runner stops the job after
    cancelled = wait_until_finished(book, long_job.id)

    assert cancelled.state is RunState.CANCELLED
    assert cancelled.finished_at is not None
    assert process_gone(child)
    assert store.list_versions() == []
    # The waiting job may already be staging in a warm process: only the cancelled one counts.
    assert [name for name in staging_debris(store) if long_job.id in name] == []
    with pytest.raises(JobAlreadyFinished) as refused:
        executor.cancel(long_job.id)
    assert refused.value.job.state is RunState.CANCELLED
    assert wait_until_training(book, waiting.id).state is RunState.RUNNING  # the next one runs
    executor.cancel(waiting.id)
    assert wait_until_finished(book, waiting.id).state is RunState.CANCELLED


def test_a_killed_training_process_fails_its_job_and_the_next_job_runs(
    store: ModelStore, start_runner: StartRunner
) -> None:
    runner = start_runner()
    book = JobBook(store)
    doomed = book.submit(LONG)
    after = book.submit(QUICK)
    wait_until_training(book, doomed.id)
    os.kill(runner.training_process(doomed.id), signal.SIGKILL)  # as the OOM killer does

    failed = wait_until_finished(book, doomed.id)
    assert failed.state is RunState.FAILED
    assert failed.error == "training process killed by SIGKILL (out of memory?)"
    assert wait_until_finished(book, after.id).state is RunState.SUCCEEDED
    assert store.verify_version("square", 1).metadata["job_id"] == after.id
    assert runner.process.poll() is None


def test_a_training_error_fails_the_job_with_its_message(
    store: ModelStore, start_runner: StartRunner
) -> None:
    start_runner()
    (store.root / "blocked").write_text("a file where the model folder should be")
    book = JobBook(store)
    job = wait_until_finished(
        book, book.submit(QUICK.model_copy(update={"model_name": "blocked"})).id
    )
    assert job.state is RunState.FAILED
    assert job.error is not None
    assert "File exists" in job.error or "Not a directory" in job.error
    assert "Traceback" not in job.error


def test_a_job_past_its_time_limit_fails_and_publishes_nothing(
    store: ModelStore, start_runner: StartRunner
) -> None:
    start_runner()
    book = JobBook(store)
    job = book.submit(LONG.model_copy(update={"max_train_seconds": 3}))
    ended = wait_until_finished(book, job.id)
    assert ended.state is RunState.FAILED
    assert ended.error is not None
    assert ended.error.startswith(
        "time limit exceeded: the job ran longer than max_train_seconds=3"
    )
    assert store.list_versions() == []


def test_a_runner_killed_mid_job_requeues_it_and_the_next_runner_resumes_it_from_its_checkpoint(
    store: ModelStore, start_runner: StartRunner
) -> None:
    first = start_runner()
    book = JobBook(store)
    job = book.submit(RESUMABLE)
    checkpoint = JobFiles(store).checkpoint_path(job.id)
    wait_for(checkpoint.exists, JOB_TIMEOUT, "the job's first checkpoint")
    child = first.training_process(job.id)
    first.kill()
    wait_for(lambda: process_gone(child), 10, "the orphaned training process to die")
    assert book.get(job.id).state is RunState.RUNNING  # nobody has noticed yet
    saved = Checkpoint(checkpoint).load()
    assert saved is not None and 1 <= saved.epoch < RESUMABLE.epochs

    second = start_runner()
    resumed = wait_until_finished(book, job.id)

    assert resumed.state is RunState.SUCCEEDED, resumed.error
    assert resumed.resumes == 1
    # every epoch once: those after the checkpoint were trained again, none before it
    assert [row["epoch"] for row in book.epochs_since(job.id, 0)] == list(
        range(1, RESUMABLE.epochs + 1)
    )
    assert f"training resumed after epoch {saved.epoch} (checkpoint)" in second.log()
    assert not checkpoint.exists()  # a final job keeps no checkpoint
    assert staging_debris(store) == []
    # that it ends as an uninterrupted run does: tests/training/test_checkpoint.py


def test_a_job_lost_with_its_runner_too_often_fails(
    store: ModelStore, start_runner: StartRunner
) -> None:
    """The job may be what brings its runner down: after ``MAX_RESUMES`` it fails."""
    first = start_runner()
    book = JobBook(store)
    job = book.submit(LONG)
    wait_until_training(book, job.id)
    book.files.write(book.get(job.id).model_copy(update={"resumes": MAX_RESUMES}))
    child = first.training_process(job.id)
    first.kill()
    wait_for(lambda: process_gone(child), 10, "the orphaned training process to die")

    start_runner()
    lost = wait_until_finished(book, job.id, timeout=30)

    assert lost.state is RunState.FAILED
    assert lost.error == (
        "trainer process lost: the job runner stopped while the job was training "
        f"(it had resumed {MAX_RESUMES} times)"
    )
    assert store.list_versions() == []
    assert staging_debris(store) == []
    after = wait_until_finished(book, book.submit(QUICK).id)
    assert after.state is RunState.SUCCEEDED
    assert after.model_version == 1


def test_sigterm_requeues_the_running_job_and_leaves_no_orphan(
    store: ModelStore, start_runner: StartRunner
) -> None:
    runner = start_runner()
    book = JobBook(store)
    job = book.submit(LONG)
    wait_until_training(book, job.id)
    children = runner.job_processes()

    assert runner.terminate() == 0

    assert all(process_gone(pid) for pid in children)
    interrupted = book.get(job.id)
    assert interrupted.state is RunState.QUEUED  # it resumes when a runner starts again
    assert interrupted.resumes == 1
    assert store.list_versions() == []
    assert "local runner stopped" in runner.log()


def test_a_second_runner_on_the_store_waits_and_takes_over(
    store: ModelStore, start_runner: StartRunner
) -> None:
    active = start_runner()
    wait_for(lambda: "active on" in active.log(), JOB_TIMEOUT, "the first runner")
    standby = start_runner()
    wait_for(lambda: "standby" in standby.log(), JOB_TIMEOUT, "the second runner to wait")
    active.kill()
    book = JobBook(store)
    job = wait_until_finished(book, book.submit(QUICK).id)
    assert job.state is RunState.SUCCEEDED
    assert "active on" in standby.log()


def test_max_concurrent_jobs_runs_that_many_at_once(
    store: ModelStore, start_runner: StartRunner
) -> None:
    start_runner(max_concurrent_jobs="2")
    book = JobBook(store)
    executor = LocalExecutor(book)
    jobs = [executor.submit(LONG) for _ in range(3)]
    for job in jobs[:2]:
        assert wait_until_training(book, job.id).state is RunState.RUNNING
    assert book.get(jobs[2].id).state is RunState.QUEUED
    for job in jobs:
        executor.cancel(job.id)
    for job in jobs:
        assert wait_until_finished(book, job.id).state is RunState.CANCELLED


def test_the_pool_is_as_large_as_the_concurrency_and_warm_before_it_says_ready(
    store: ModelStore, start_runner: StartRunner
) -> None:
    runner = start_runner(max_concurrent_jobs="2")
    book = JobBook(store)
    # every process of the pool imports TensorFlow and trains a tiny job first: slow when busy
    wait_for(lambda: pool_warm(book, lambda pid: pid == runner.pid), JOB_TIMEOUT, "a warm pool")
    assert runner.log().count(" warm in ") >= 2  # each process said so before the runner did
    pool = set(runner.job_processes())
    assert len(pool) == 2
    executor = LocalExecutor(book)
    jobs = [executor.submit(QUICK) for _ in range(2)]
    assert {runner.training_process(job.id) for job in jobs} == pool  # both warm already
    for job in jobs:
        assert wait_until_finished(book, job.id).state is RunState.SUCCEEDED
    # the pool refills: two new warm processes beside the two that trained and exited
    wait_for(lambda: len(set(runner.job_processes()) - pool) == 2, JOB_TIMEOUT, "a new pool")
    assert runner.terminate() == 0
    assert not pool_warm(book, lambda pid: True)  # a stopped runner takes its word back


def test_a_job_process_stalled_past_its_deadline_can_never_publish(
    store: ModelStore, tmp_path: Path
) -> None:
    """The fence, with a real job process that outlives the decision (as a lost one could)."""
    book = JobBook(store)
    job = book.submit(QUICK.model_copy(update={"epochs": 200, "n_samples": 1000}))
    book.start(job.id)
    log = (tmp_path / "job.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            *("-m", "trainer_service.runner.job_process", "--model-store", str(store.root)),
            *("--job-id", job.id, "--params", job.params.model_dump_json()),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until_training(book, job.id)
        os.kill(process.pid, signal.SIGSTOP)  # stalled: no chance to notice anything
        ended = book.finish(job.id, TIME_LIMIT)  # what the runner does at the deadline
        assert ended is not None and ended.state is RunState.FAILED
        os.kill(process.pid, signal.SIGCONT)
        assert process.wait(timeout=JOB_TIMEOUT) in (0, 1)  # it trained on, then was refused
    finally:
        process.kill()
        process.wait()
        log.close()
    result = JobFiles(store).read_report(job.id).result
    assert result is not None, (tmp_path / "job.log").read_text()
    assert result["result"] in ("cancelled", "failed"), result
    assert store.list_versions() == []
    assert staging_debris(store) == []
    assert book.get(job.id) == ended


def test_a_job_process_given_bad_arguments_exits_with_usage(store: ModelStore) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "trainer_service.runner.job_process", "--model-store", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "give --warm, or --job-id and --params" in done.stderr
