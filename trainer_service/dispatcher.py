"""The job runner of one trainer replica: claims QUEUED jobs and runs each in a child process.

``python -m trainer_service.dispatcher --model-store DIR --max-concurrent-jobs N`` runs next
to gunicorn (the web workers never train). One single-threaded loop waits on the children's
report pipes and a signal pipe, so it reacts at once to epochs, exits, cancels and SIGTERM:

- claims the oldest QUEUED job while fewer than N of its own run (``RunnerBook.claim_next``);
- starts ``python -m trainer_service.job_process`` for it, appends each reported epoch to
  ``epochs.jsonl`` and renews the job's lease and progress every ``--heartbeat-interval``;
- kills the child when the job's cancel request appears, then records CANCELLED;
- records SUCCEEDED, or FAILED with the reason (the exception's message, or the signal that
  killed the child), and removes the job's staging folders;
- fails jobs whose runner is gone, found by any dispatcher (``RunnerBook.reap``);
- on SIGTERM or SIGINT kills its children, fails their jobs as interrupted and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from squarenet.store import ModelStore
from trainer_service.job_records import JobFiles, JobRecord, JobState
from trainer_service.jobs import DEFAULT_MAX_QUEUED, JobBook
from trainer_service.leases import Runner, RunnerBook
from trainer_service.sweeps import reconcile_sweeps
from trainer_service.training_child import SHUTDOWN_ERROR, TrainingChild

_log = logging.getLogger("trainer_service.dispatcher")
_WAKE_READ_CHUNK = 512
_EXIT_POLL_SECONDS = 0.05
_SWEEP_EVERY_SECONDS = 60.0
_EPOCH_FLUSH_SECONDS = 0.2  # append epochs in batches: one write per batch, not per epoch
_SWEEPS_EVERY_SECONDS = 2.0  # and at once whenever a job of this runner ends

__all__ = ["SHUTDOWN_ERROR", "Dispatcher", "DispatcherSettings", "main"]


@dataclass(frozen=True)
class DispatcherSettings:
    """How the runner behaves; the defaults suit one replica on a small machine."""

    max_concurrent_jobs: int = 1
    max_queued_jobs: int = DEFAULT_MAX_QUEUED  # the API's bound: sweeps keep within a share
    poll_interval: float = 0.5
    heartbeat_interval: float = 1.0
    stale_after: float = 120.0  # above NFS clients' default attribute caching (up to 60 s)
    exit_with_parent: bool = False  # shut down (as on SIGTERM) when the launcher dies

    def __post_init__(self) -> None:
        if self.max_concurrent_jobs < 1:
            raise ValueError("max_concurrent_jobs must be at least 1")
        if min(self.poll_interval, self.heartbeat_interval) <= 0:
            raise ValueError("poll_interval and heartbeat_interval must be positive")
        if self.stale_after <= 2 * self.heartbeat_interval:
            raise ValueError("stale_after must be more than twice heartbeat_interval")


class Dispatcher:
    """Runs jobs from the shared store, at most ``max_concurrent_jobs`` at once."""

    def __init__(self, store: ModelStore, settings: DispatcherSettings) -> None:
        self.store = store
        self.settings = settings
        self.book = RunnerBook(store, Runner.here())
        self.job_book = JobBook(store, max_queued=settings.max_queued_jobs)
        self.active: dict[str, TrainingChild] = {}
        self._stopping = False
        self._parent_pid = os.getppid()
        self._next_reap = 0.0
        self._next_sweep = 0.0
        self._next_sweeps_pass = 0.0

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the exit status (0)."""
        wake_read, wake_write = os.pipe()
        os.set_blocking(wake_read, False)
        os.set_blocking(wake_write, False)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        runner = self.book.runner
        _log.info(
            "dispatcher started on %s pid %d (runner %s), store %s, max %d concurrent jobs",
            runner.host,
            runner.pid,
            runner.runner_id,
            self.store.root,
            self.settings.max_concurrent_jobs,
        )
        try:
            while not self._stopping:
                self._wait(wake_read)
                if not self._stopping:
                    self._tick_safely()
        finally:
            self.shutdown()
            signal.set_wakeup_fd(-1)
            os.close(wake_read)
            os.close(wake_write)
        _log.info("dispatcher stopped")
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _wait(self, wake_read: int) -> None:
        """Sleep until a child reports, a signal arrives, or the next periodic duty."""
        fds = [child.reports for child in self.active.values() if child.reports is not None]
        exiting = any(child.reports is None for child in self.active.values())
        timeout = _EXIT_POLL_SECONDS if exiting else self.settings.poll_interval
        with contextlib.suppress(InterruptedError):
            readable, _, _ = select.select([wake_read, *fds], [], [], timeout)
            if wake_read in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, _WAKE_READ_CHUNK)

    def _tick_safely(self) -> None:
        try:
            self._tick()
        except OSError as exc:  # the store may be briefly unavailable: keep going
            _log.error("dispatcher: store error, retrying: %s", exc)
            time.sleep(self.settings.poll_interval)
        except Exception:  # a bug must not stop every job of this replica: log it, go on
            _log.exception("dispatcher: unexpected error, retrying")
            time.sleep(self.settings.poll_interval)

    def _tick(self) -> None:
        if self.settings.exit_with_parent and os.getppid() != self._parent_pid:
            _log.warning("dispatcher: parent process %d is gone, shutting down", self._parent_pid)
            self._stopping = True
            return
        now = time.monotonic()
        for child in list(self.active.values()):
            child.read_reports()
            if now >= child.next_epoch_flush:
                self._flush_epochs(child)
                child.next_epoch_flush = now + _EPOCH_FLUSH_SECONDS
            if child.exited():
                self._finalize(child)
            elif self.book.cancel_requested(child.job_id):
                self._stop(child, "cancel")
            elif now >= child.next_heartbeat:
                self._heartbeat(child, now)
        if now >= self._next_reap:
            self.book.reap(self.settings.stale_after)
            self._next_reap = now + min(5.0, self.settings.stale_after / 3)
        if now >= self._next_sweep:
            self.book.sweep_staging()
            self._next_sweep = now + _SWEEP_EVERY_SECONDS
        if now >= self._next_sweeps_pass:  # sweeps release their next trials before a claim
            reconcile_sweeps(self.store, self.job_book)
            self._next_sweeps_pass = now + _SWEEPS_EVERY_SECONDS
        while len(self.active) < self.settings.max_concurrent_jobs and not self._stopping:
            record = self.book.claim_next()
            if record is None:
                break
            self._start(record)

    # --- children ---------------------------------------------------------------------

    def _start(self, record: JobRecord) -> None:
        if self.book.cancel_requested(record.id):
            self.book.finish(record.id, JobState.CANCELLED)
            return
        try:
            child = TrainingChild.start(self.store, record)
        except OSError as exc:
            self.book.finish(
                record.id, JobState.FAILED, error=f"could not start training process: {exc}"
            )
            return
        child.next_heartbeat = time.monotonic() + self.settings.heartbeat_interval
        self.active[record.id] = child
        _log.info("job %s started in process %d", record.id, child.process.pid)

    def _flush_epochs(self, child: TrainingChild) -> None:
        rows = child.take_epochs()
        if rows and child.stop_reason != "lost":
            self.book.files.append_epochs(child.job_id, rows)

    def _heartbeat(self, child: TrainingChild, now: float) -> None:
        child.next_heartbeat = now + self.settings.heartbeat_interval
        self._flush_epochs(child)  # the history is never behind the progress clients see
        if self.book.heartbeat(child.job_id, child.progress) is None:
            _log.warning("job %s is no longer ours (ended elsewhere): stopping it", child.job_id)
            self._stop(child, "lost")

    def _stop(self, child: TrainingChild, reason: str) -> None:
        """Kill the process at once and record the outcome."""
        child.kill(reason)
        self._finalize(child)

    def _finalize(self, child: TrainingChild) -> None:
        """The process is gone: record the final state its end stands for."""
        child.drain()
        self._flush_epochs(child)
        if child.stop_reason == "lost":
            self.book.discard_staging(child.record)
            del self.active[child.job_id]
            return
        state, fields = child.outcome()
        if state is not JobState.SUCCEEDED:
            published = self.book.published_version(child.record)
            if published is not None:  # it published before it was stopped: a real version
                state = JobState.SUCCEEDED
                fields = {"model_version": published[0], "metrics": published[1]}
        # Should the store fail here, the job stays active and the next tick records it.
        if self.book.finish(child.job_id, state, progress=child.progress, **fields) is None:
            self.book.discard_staging(child.record)  # ended elsewhere meanwhile: clean up
        del self.active[child.job_id]
        self._next_sweeps_pass = 0.0  # a trial may have ended: the sweep moves on this tick

    def shutdown(self) -> None:
        """Kill every child and fail its job as interrupted."""
        for child in list(self.active.values()):
            _log.info("job %s: interrupted by shutdown", child.job_id)
            try:
                self._stop(child, "shutdown")
            except OSError as exc:  # its lease goes stale and another runner fails it
                _log.error("job %s: could not record the interruption: %s", child.job_id, exc)


def parse_args(argv: list[str] | None) -> tuple[ModelStore, DispatcherSettings]:
    """Command-line flags, each with a SQUARENET_* environment default."""
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m trainer_service.dispatcher",
        description="Run the trainer's queued jobs, each in its own process.",
    )
    parser.add_argument(
        "--model-store",
        type=Path,
        default=env("SQUARENET_MODEL_STORE"),
        help="the shared model store (env SQUARENET_MODEL_STORE)",
    )
    parser.add_argument(
        "--max-concurrent-jobs",
        type=int,
        default=env("SQUARENET_MAX_CONCURRENT_JOBS", "1"),
        help="training processes this replica runs at once (env SQUARENET_MAX_CONCURRENT_JOBS)",
    )
    parser.add_argument(
        "--max-queued-jobs",
        type=int,
        default=env("SQUARENET_MAX_QUEUED_JOBS", str(DEFAULT_MAX_QUEUED)),
        help="the job queue's bound; sweeps' trials take at most half of it",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.5, help="seconds between looks at the queue"
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=1.0,
        help="seconds between record updates (progress, heartbeat) of a running job",
    )
    parser.add_argument(
        "--stale-after",
        type=float,
        default=120.0,
        help="a RUNNING job of another host with no heartbeat for this long is FAILED",
    )
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="shut down like on SIGTERM when the process that started this one dies",
    )
    args = parser.parse_args(argv)
    if args.model_store is None:
        parser.error("--model-store (or SQUARENET_MODEL_STORE) is required")
    try:
        settings = DispatcherSettings(
            max_concurrent_jobs=args.max_concurrent_jobs,
            max_queued_jobs=args.max_queued_jobs,
            poll_interval=args.poll_interval,
            heartbeat_interval=args.heartbeat_interval,
            stale_after=args.stale_after,
            exit_with_parent=args.exit_with_parent,
        )
    except ValueError as exc:
        parser.error(str(exc))
    return ModelStore(args.model_store), settings


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m trainer_service.dispatcher``."""
    store, settings = parse_args(argv)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        store.root.mkdir(parents=True, exist_ok=True)
        JobFiles(store).ensure_layout()  # a store we cannot write to is fatal, not a retry loop
    except OSError as exc:
        _log.error("dispatcher: cannot use the model store %s: %s", store.root, exc)
        return 1
    return Dispatcher(store, settings).run()


if __name__ == "__main__":
    raise SystemExit(main())
