"""The job book as the REST layer uses it: records on a real temp store, real processes."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import patient

from squarenet.store import ModelStore
from trainer_service.errors import JobAlreadyFinished, JobNotFound, PlotNotFound, QueueFull
from trainer_service.lifecycle import EndReason, RunState
from trainer_service.params import TrainingParams
from trainer_service.runner import fence
from trainer_service.runner.book import CANCELLED, EXITED, TIME_LIMIT, Ending, JobBook
from trainer_service.runner.local import LocalExecutor
from trainer_service.runner.records import (
    Job,
    JobFiles,
    Progress,
    is_job_id,
    new_job_id,
    trial_job_id,
)
from trainer_service.runner.slots import JobSlots


def cancel(book: JobBook, job_id: str) -> Job:
    """Cancel as the API does with the local executor."""
    return LocalExecutor(book).cancel(job_id)


TINY = TrainingParams.model_validate({"n_samples": 200, "epochs": 3, "batch_size": 20, "seed": 1})


def test_submit_records_a_queued_job_with_every_effective_parameter(store: ModelStore) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    assert is_job_id(job.id)
    assert job.state is RunState.QUEUED
    assert job.progress.epoch == 0
    assert job.progress.epochs == 3
    shown = job.model_dump(mode="json")
    assert set(shown) == {
        "id",
        "state",
        "params",
        "progress",
        "metrics",
        "model_version",
        "error",
        "end_reason",
        "created_at",
        "started_at",
        "finished_at",
        "sweep_id",
        "resumes",
    }
    assert shown["resumes"] == 0
    assert shown["end_reason"] is None  # not ended yet
    assert shown["params"]["num_neurons"] == 10  # defaults filled in
    assert shown["created_at"].endswith("Z")
    assert book.get(job.id) == job
    assert JobFiles(store).record_path(job.id).is_file()


def test_requeue_puts_a_running_job_back_and_finish_removes_its_checkpoint(
    store: ModelStore,
) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    assert book.requeue(job.id, "a test") is None  # only a RUNNING job goes back
    assert book.start(job.id) is not None
    requeued = book.requeue(job.id, "a test")
    assert requeued is not None
    assert requeued.state is RunState.QUEUED and requeued.resumes == 1
    assert book.get(job.id) == requeued
    assert book.start(job.id) is not None
    checkpoint = JobFiles(store).checkpoint_path(job.id)
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"state")
    ended = book.finish(job.id, CANCELLED)
    assert ended is not None and ended.resumes == 1
    assert not checkpoint.exists()
    assert book.requeue(job.id, "a test") is None  # a final job stays final


def _report(store: ModelStore, job_id: str, result: dict[str, Any]) -> None:
    """Write a job process's result line, as the job's own process does."""
    path = JobFiles(store).progress_path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("ending", "result", "end"),
    [
        (CANCELLED, None, EndReason.CANCELLED),
        (TIME_LIMIT, None, EndReason.TIME_LIMIT),
        (Ending("failed", "trainer process lost", EndReason.LOST), None, EndReason.LOST),
        (Ending("exited", "its pod ended without a result"), None, EndReason.ERROR),
        (EXITED, {"result": "cancelled"}, EndReason.CANCELLED),
        (EXITED, {"result": "failed", "error": "x", "end": "interrupted"}, EndReason.INTERRUPTED),
        (EXITED, {"result": "failed", "error": "diverged", "end": "error"}, EndReason.ERROR),
    ],
)
def test_a_finished_job_records_why_it_ended(
    store: ModelStore, ending: Ending, result: dict[str, Any] | None, end: EndReason
) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    assert book.start(job.id) is not None
    if result is not None:
        _report(store, job.id, result)
    ended = book.finish(job.id, ending)
    assert ended is not None and ended.end_reason is end
    assert book.get(job.id).end_reason is end


def test_a_job_process_of_an_older_version_is_understood_by_its_words(store: ModelStore) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    _report(store, job.id, {"result": "failed", "error": "interrupted: SIGTERM"})
    ended = book.finish(job.id, EXITED)
    assert ended is not None and ended.end_reason is EndReason.INTERRUPTED


@pytest.mark.parametrize(
    ("state", "error", "end"),
    [
        ("QUEUED", None, None),
        ("RUNNING", None, None),
        ("SUCCEEDED", None, EndReason.PUBLISHED),
        ("CANCELLED", None, EndReason.CANCELLED),
        ("FAILED", "interrupted: its pod was disrupted by the cluster", EndReason.INTERRUPTED),
        ("FAILED", "trainer process lost: the job runner stopped", EndReason.LOST),
        ("FAILED", "time limit exceeded: the job ran longer", EndReason.TIME_LIMIT),
        ("FAILED", "lost: its Kubernetes Job is gone", EndReason.ERROR),
        ("FAILED", "training diverged", EndReason.ERROR),
    ],
)
def test_a_record_written_before_end_reasons_gets_one_when_read(
    store: ModelStore, state: str, error: str | None, end: EndReason | None
) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    older = job.model_dump(mode="json", exclude={"end_reason"}) | {"state": state, "error": error}
    JobFiles(store).record_path(job.id).write_text(json.dumps(older), encoding="utf-8")
    assert book.get(job.id).end_reason is end


def test_another_book_on_the_same_store_sees_the_same_jobs(store: ModelStore) -> None:
    job = JobBook(store).submit(TINY)
    assert JobBook(ModelStore(store.root)).get(job.id) == job


def test_list_is_newest_first(store: ModelStore) -> None:
    book = JobBook(store)
    ids = [book.submit(TINY).id for _ in range(4)]
    assert [job.id for job in book.list()] == list(reversed(ids))


def test_queue_bound_raises_queue_full_with_the_limit(store: ModelStore) -> None:
    book = JobBook(store, max_queued=2)
    book.submit(TINY)
    book.submit(TINY)
    with pytest.raises(QueueFull) as refused:
        book.submit(TINY)
    assert refused.value.limit == 2
    assert len(book.list()) == 2


def test_a_cancelled_queued_job_frees_its_queue_place(store: ModelStore) -> None:
    book = JobBook(store, max_queued=1)
    first = book.submit(TINY)
    cancel(book, first.id)
    assert book.submit(TINY).state is RunState.QUEUED


def _submit_many(root: str, count: int, results: multiprocessing.Queue[int]) -> None:
    book = JobBook(ModelStore(root), max_queued=10)
    accepted = 0
    for _ in range(count):
        try:
            book.submit(TINY)
            accepted += 1
        except QueueFull:
            pass
    results.put(accepted)


def test_queue_bound_holds_across_processes_submitting_at_once(store: ModelStore) -> None:
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[int] = context.Queue()
    workers = [
        context.Process(target=_submit_many, args=(str(store.root), 8, results)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=patient(60))
        assert worker.exitcode == 0
    assert sum(results.get(timeout=5) for _ in workers) == 10
    assert len(JobBook(store).list()) == 10


@pytest.mark.parametrize(
    "job_id",
    [
        "20261129T051500Z-3f9a1c2b",  # well formed, never submitted
        "../../etc/passwd",
        "queue",
        ".lock",
        "",
        "20261129T051500Z-3f9a1c2b.json",
        "20261129T051500Z-3F9A1C2B",
        "x" * 5000,
        "20261129T051500Z-3f9a1c2b\n",
    ],
)
def test_unknown_or_malformed_ids_are_job_not_found(store: ModelStore, job_id: str) -> None:
    book = JobBook(store)
    book.submit(TINY)
    with pytest.raises(JobNotFound):
        book.get(job_id)
    with pytest.raises(JobNotFound):
        cancel(book, job_id)
    with pytest.raises(JobNotFound):
        book.epochs_since(job_id, 0)
    with pytest.raises(JobNotFound):
        book.artifact_path(job_id, "loss.png")


def test_cancel_of_a_queued_job_cancels_it_at_once(store: ModelStore) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    cancelled = cancel(book, job.id)
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.finished_at is not None
    assert book.get(job.id) == cancelled
    assert book.count(RunState.QUEUED) == 0


def test_cancel_of_a_finished_job_raises_already_finished_with_the_job(
    store: ModelStore,
) -> None:
    book = JobBook(store)
    job = cancel(book, book.submit(TINY).id)
    with pytest.raises(JobAlreadyFinished) as refused:
        cancel(book, job.id)
    assert refused.value.job == job


def test_cancel_of_a_running_job_leaves_a_request_and_returns_it_as_it_is(
    store: ModelStore,
) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    assert book.start(job.id) is not None  # as a runner does when it hands the job out
    answer = cancel(book, job.id)  # no runner is there: it returns without one
    assert answer.state is RunState.RUNNING
    assert JobFiles(store).cancel_path(job.id).exists()
    assert book.cancel_requested(job.id)


def test_epochs_since_returns_later_epochs_and_skips_a_line_being_written(
    store: ModelStore,
) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    write_progress(
        JobFiles(store),
        job.id,
        '{"epoch": 1, "epochs": 3, "loss": 3.0, "val_loss": 2.5}\n'
        '{"epoch": 2, "epochs": 3, "loss": 1.0, "val_loss": null}\n'
        '{"epoch": 3, "lo',
    )
    assert book.epochs_since(job.id, 0) == [
        {"epoch": 1, "loss": 3.0, "val_loss": 2.5},
        {"epoch": 2, "loss": 1.0, "val_loss": None},
    ]
    assert book.epochs_since(job.id, 1) == [{"epoch": 2, "loss": 1.0, "val_loss": None}]
    assert book.epochs_since(job.id, 2) == []


def write_progress(files: JobFiles, job_id: str, text: str) -> None:
    """Progress lines as the job's process appends them."""
    path = files.progress_path(job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(text)


def test_a_running_jobs_progress_comes_from_its_process_report(store: ModelStore) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    book.start(job.id)
    write_progress(JobFiles(store), job.id, '{"epoch": 2, "epochs": 3, "loss": 1.0}\n')
    assert book.get(job.id).progress == Progress(epoch=2, epochs=3)
    assert [listed.progress.epoch for listed in book.list()] == [2]


def test_epochs_since_is_empty_before_the_first_epoch(store: ModelStore) -> None:
    book = JobBook(store)
    assert book.epochs_since(book.submit(TINY).id, 0) == []


@pytest.mark.parametrize("name", ["loss.png", "fit.png"])
def test_artifact_path_finds_a_drawn_plot(store: ModelStore, name: str) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    with pytest.raises(PlotNotFound):
        book.artifact_path(job.id, name)
    folder = JobFiles(store).job_dir(job.id)
    folder.mkdir(parents=True)
    (folder / name).write_bytes(b"\x89PNG")
    assert book.artifact_path(job.id, name) == folder / name


@pytest.mark.parametrize(
    "name", ["progress.jsonl", "cancel", "../x.json", "loss.svg", "", "fit.png/"]
)
def test_artifact_path_refuses_anything_but_the_plots(store: ModelStore, name: str) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    folder = JobFiles(store).job_dir(job.id)
    folder.mkdir(parents=True)
    (folder / "progress.jsonl").write_text("")
    with pytest.raises(PlotNotFound):
        book.artifact_path(job.id, name)


def test_counts_has_every_state(store: ModelStore) -> None:
    book = JobBook(store)
    book.submit(TINY)
    cancel(book, book.submit(TINY).id)
    assert book.counts() == {
        RunState.QUEUED: 1,
        RunState.RUNNING: 0,
        RunState.SUCCEEDED: 0,
        RunState.FAILED: 0,
        RunState.CANCELLED: 1,
    }


def test_a_damaged_record_is_left_out_not_an_error(store: ModelStore) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    damaged = book.submit(TINY)
    Path(store.jobs_dir / f"{damaged.id}.json").write_text("{not json")
    assert [j.id for j in book.list()] == [job.id]
    with pytest.raises(JobNotFound):
        book.get(damaged.id)


def test_an_empty_store_has_no_jobs(tmp_path: Path) -> None:
    book = JobBook(ModelStore(tmp_path / "missing"))
    assert book.list() == []
    assert sum(book.counts().values()) == 0


def finished_record(files: JobFiles, created: datetime, state: RunState) -> str:
    """A finished job's record and progress as the runner leaves them, created at ``created``."""
    job_id = new_job_id(created)
    stamp = created.isoformat().replace("+00:00", "Z")
    files.write(
        Job(
            id=job_id,
            state=state,
            params=TINY,
            progress=Progress(epoch=1, epochs=3),
            created_at=stamp,
            finished_at=stamp,
        )
    )
    write_progress(files, job_id, '{"epoch": 1, "epochs": 3, "loss": 1.0}\n')
    return job_id


def test_the_oldest_finished_jobs_are_forgotten_beyond_keep_finished(store: ModelStore) -> None:
    book = JobBook(store, keep_finished=2, max_queued=10)
    files = JobFiles(store)
    start = datetime(2026, 11, 1, tzinfo=UTC)
    old = [
        finished_record(files, start + timedelta(minutes=n), state)
        for n, state in enumerate([RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED])
    ]
    waiting = book.submit(TINY)  # 3 finished > 2 kept: the oldest goes
    assert [job.id for job in book.list()] == [waiting.id, old[2], old[1]]
    with pytest.raises(JobNotFound):
        book.get(old[0])
    assert not files.job_dir(old[0]).exists()
    assert files.job_dir(old[1]).exists()

    later = book.submit(TINY)  # jobs not finished never count against the kept ones
    assert [job.id for job in book.list()] == [later.id, waiting.id, old[2], old[1]]
    assert book.counts()[RunState.QUEUED] == 2


def test_a_job_that_reported_its_version_succeeds_after_many_later_versions(
    store: ModelStore,
) -> None:
    book = JobBook(store)
    job = book.submit(TINY)
    book.start(job.id)
    staging = fence.claim(store, "square", job.id).path
    for name in ("model.tflite", "saved_model.pb"):
        (staging / name).write_bytes(b"placeholder")
    metadata = {"domain": [-5.0, 5.0], "job_id": job.id, "metrics": {"loss": 0.25}}
    version = store.publish_version(staging, metadata).version
    for number in range(21):  # more versions than the fence's lookback land before it settles
        other = store.model_dir("square") / f".tmp-other-{number}"
        other.mkdir()
        for name in ("model.tflite", "saved_model.pb"):
            (other / name).write_bytes(b"placeholder")
        store.publish_version(other, {"domain": [-5.0, 5.0], "job_id": f"other-{number}"})
    progress = JobFiles(store).progress_path(job.id)
    progress.parent.mkdir(parents=True, exist_ok=True)
    progress.write_text(
        json.dumps({"result": "succeeded", "version": version, "metrics": {"loss": 0.25}}) + "\n"
    )
    done = book.finish(job.id, EXITED)
    assert done is not None
    assert done.state is RunState.SUCCEEDED, done.error
    assert done.model_version == version


def _take_slot(root: str, job_id: str, taken: Any) -> None:
    taken.put(JobSlots(Path(root), 3).take(job_id))


def test_job_slots_hold_their_bound_across_processes_taking_at_once(tmp_path: Path) -> None:
    """The kubernetes executor's bound: 8 API workers race for 3 slots, 3 win."""
    context = multiprocessing.get_context("spawn")
    taken = context.Queue()
    racers = [
        context.Process(target=_take_slot, args=(str(tmp_path), new_job_id(), taken))
        for _ in range(8)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    results = [taken.get(timeout=10) for _ in racers]
    assert sorted(results) == [False] * 5 + [True] * 3
    slots = JobSlots(tmp_path, 3)
    holder = next(iter(slots.holders().values()))
    slots.release(holder)
    assert slots.take(new_job_id())
    assert not slots.take(new_job_id())


def test_a_finished_job_frees_its_slot(store: ModelStore) -> None:
    book = JobBook(store, slots=1, local_lock=False)
    job = book.submit(TINY)
    assert book.slots is not None and book.slots.take(job.id)
    assert not book.slots.take(new_job_id())
    book.finish(job.id, EXITED)
    assert book.slots.take(new_job_id())


def test_a_trials_job_id_is_the_same_every_time_and_new_per_attempt(store: ModelStore) -> None:
    sweep = "20261205-084221-0a1b2c3d"
    first = trial_job_id(sweep, 3, 0)
    assert is_job_id(first) and first.startswith("20261205T084221Z-")
    assert trial_job_id(sweep, 3, 0) == first
    assert len({first, trial_job_id(sweep, 3, 1), trial_job_id(sweep, 4, 0)}) == 3
    assert trial_job_id("20261205-084221-ffffffff", 3, 0) != first
    book = JobBook(store)
    released = book.submit(TINY, job_id=first, sweep_id=sweep)
    again = book.submit(TINY, job_id=trial_job_id(sweep, 3, 0), sweep_id=sweep)
    assert again == released and len(book.list()) == 1  # a second release is a no-op
