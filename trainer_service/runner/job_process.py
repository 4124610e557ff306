"""The training process of one job, started by the dispatcher; never run by hand.

``python -m trainer_service.runner.job_process --model-store DIR --job-id ID --report-fd N
--parent-pid P`` reads the job's parameters from its record, trains and publishes, and
reports to the dispatcher as JSON lines on file descriptor N::

    {"event": "epoch", "epoch": 3, "epochs": 400, "loss": 0.5, "val_loss": 0.4}
    {"event": "succeeded", "version": 7, "metrics": {...}}
    {"event": "cancelled"}
    {"event": "failed", "error": "..."}

It never outlives the dispatcher: the kernel kills it when its parent dies (Linux
``PR_SET_PDEATHSIG``), and it stops between epochs when its parent changed or the job's
cancel request appeared. Only this process pays for importing TensorFlow.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import IO, Any

from squarenet.store import ModelStore
from trainer_service.runner.records import JobFiles, JobState, finite_or_none
from trainer_service.training import (
    EpochReport,
    TrainingCancelled,
    train_and_publish,
)

_log = logging.getLogger("trainer_service.runner.job_process")
_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to SIGKILL us when the dispatcher dies; exit if it died already."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:
        raise SystemExit(3)


class Reporter:
    """Writes one JSON line per event to the dispatcher's pipe."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def send(self, event: str, **fields: Any) -> None:
        """Report one event; a closed pipe means the dispatcher is gone, so stop."""
        line = json.dumps({"event": event, **fields}, allow_nan=False)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except BrokenPipeError:
            raise SystemExit(4) from None

    def epoch(self, report: EpochReport) -> None:
        """An epoch finished."""
        self.send(
            "epoch",
            epoch=report.epoch,
            epochs=report.epochs,
            loss=finite_or_none(report.loss),
            val_loss=finite_or_none(report.val_loss),
        )


def public_error(exc: BaseException, store_root: Path) -> str:
    """The job's error as clients read it: the cause, without the server's file layout.

    The log keeps the full message. A job record is served to anyone who can read the API,
    so an OS error is told by its cause (``No space left on device (ENOSPC)``) and a path
    inside the store by its place in the store, never by the volume's mount point.
    """
    if isinstance(exc, OSError) and exc.strerror:
        code = errno.errorcode.get(exc.errno or 0)
        cause = f"{exc.strerror} ({code})" if code else exc.strerror
        return f"{cause} while training or publishing the model"
    message = str(exc) or type(exc).__name__
    for root in {str(store_root), str(store_root.resolve())}:
        message = message.replace(root + os.sep, "").replace(root, "<model store>")
    return message


def run(store: ModelStore, job_id: str, reporter: Reporter, parent_pid: int) -> int:
    """Train the job and report how it ended; the exit status is 0 unless it failed."""
    files = JobFiles(store)
    record = files.read(job_id)
    if record is None or record.state is not JobState.RUNNING:
        reporter.send("failed", error=f"job {job_id} is not RUNNING in the store")
        return 1
    cancel_path = files.cancel_path(job_id)

    def should_stop() -> bool:
        return os.getppid() != parent_pid or cancel_path.exists()

    try:
        outcome = train_and_publish(
            record.params,
            store,
            job_id=job_id,
            artifacts_dir=files.artifacts_dir(job_id),
            on_epoch=reporter.epoch,
            should_stop=should_stop,
        )
    except TrainingCancelled:
        reporter.send("cancelled")
        return 0
    except Exception as exc:  # every failure becomes the job's error, not a crash
        _log.error("job %s: training failed: %s: %s", job_id, type(exc).__name__, exc)
        _log.debug("job %s: traceback", job_id, exc_info=True)
        reporter.send("failed", error=public_error(exc, store.root))
        return 1
    metrics = {
        name: value for name, value in outcome.metrics.items() if finite_or_none(value) is not None
    }
    reporter.send("succeeded", version=outcome.version.version, metrics=metrics)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the child process."""
    parser = argparse.ArgumentParser(prog="python -m trainer_service.runner.job_process")
    parser.add_argument("--model-store", type=Path, required=True)
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--report-fd", type=int, required=True)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent(args.parent_pid)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    with os.fdopen(args.report_fd, "w", encoding="utf-8") as stream:
        return run(ModelStore(args.model_store), args.job_id, Reporter(stream), args.parent_pid)


def exit_now(status: int) -> None:
    """Leave without TensorFlow's slow interpreter teardown: the result is reported already."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    exit_now(main())
