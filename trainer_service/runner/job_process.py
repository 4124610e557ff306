"""The process that trains one job: a local runner's child, or a Kubernetes Job's container.

``--job-id ID --params JSON`` trains the job at once (what a Kubernetes Job runs); ``--warm``
imports TensorFlow first, then waits for one JSON line ``{"job_id", "params"}`` on standard
input (``WarmProcess.assign``; end of input means "not needed": exit 0).

It alone writes the job's progress file (a line per epoch, batched, then one result line
``{"result": "succeeded" | "failed" | "cancelled", ...}``) and its checkpoint, from which a
requeued job resumes. It publishes only through the job's fenced staging folder, and stops
between epochs past ``max_train_seconds`` (timed from its assignment), on SIGTERM, or when
its local parent is gone. SIGTERM is not a cancel (on Kubernetes it is also an eviction, a
drain or a pre-emption): it reports ``failed`` with ``STOPPED_ERROR`` and exits 143, so the
Job's ``podFailurePolicy`` sees a disruption; a cancelled job still ends CANCELLED, because
the runner reads the cancel request first.
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
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from squarenet.store import ModelStore
from trainer_service.lifecycle import EndReason
from trainer_service.params import TrainingParams
from trainer_service.runner import fence
from trainer_service.runner.book import time_limit_error
from trainer_service.runner.records import JobFiles, finite_metrics, finite_or_none
from trainer_service.settings import check_writable

_log = logging.getLogger("trainer_service.job_process")
_PR_SET_PDEATHSIG = 1
EXIT_STORE_NOT_WRITABLE = 2
EXIT_STOPPED = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM
STOPPED_ERROR = (
    "interrupted: the job's process was stopped (SIGTERM) before it finished: its pod was "
    "deleted, evicted, drained or pre-empted; nothing was published"
)
_FLUSH_SECONDS = 0.25  # epochs reach the file in batches: a write per batch, not per epoch


class TimeLimitExceeded(Exception):
    """The job ran past its ``max_train_seconds``."""


class ProgressFile:
    """The job's progress file, appended by this process alone."""

    def __init__(self, path: Path, resumed: list[Any]) -> None:
        """Start the file with the epochs of the checkpoint this job resumes from: epochs an
        earlier process wrote after its last checkpoint are trained again, so dropped here."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if resumed or path.exists():
            temporary = path.with_name(f".{path.name}.tmp")
            temporary.write_text("".join(map(_epoch_line, resumed)), encoding="utf-8")
            temporary.replace(path)
        self.stream: IO[str] = path.open("a", encoding="utf-8")
        self.pending: list[str] = []
        self.flushed_at = time.monotonic()

    def epoch(self, report: Any) -> None:
        """An epoch finished (written within ``_FLUSH_SECONDS``)."""
        self.pending.append(_epoch_line(report))
        if time.monotonic() - self.flushed_at >= _FLUSH_SECONDS:
            self.flush()

    def result(self, result: str, **fields: Any) -> None:
        """The last line: how the job ended."""
        self.pending.append(_line(result=result, **fields))
        self.flush()

    def flush(self) -> None:
        """Write the pending lines in one go, so readers see whole lines, then fsync: on NFS a
        write may sit in this node's page cache until close, ~30 s late for other nodes."""
        if self.pending:
            self.stream.write("".join(self.pending))
            self.stream.flush()
            os.fsync(self.stream.fileno())
            self.pending = []
        self.flushed_at = time.monotonic()


def _line(**fields: Any) -> str:
    return json.dumps(fields, allow_nan=False) + "\n"


def _epoch_line(report: Any) -> str:
    return _line(
        epoch=report.epoch,
        epochs=report.epochs,
        loss=finite_or_none(report.loss),
        val_loss=finite_or_none(report.val_loss),
    )


def public_error(exc: BaseException, store_root: Path) -> str:
    """The job's error as anyone who can read the API sees it (the log keeps the full one):
    an OS error by its cause (``No space left on device (ENOSPC)``), a path inside the store
    by its place in the store, never by the volume's mount point."""
    if isinstance(exc, OSError) and exc.strerror:
        code = errno.errorcode.get(exc.errno or 0)
        cause = f"{exc.strerror} ({code})" if code else exc.strerror
        return f"{cause} while training or publishing the model"
    message = str(exc) or type(exc).__name__
    for root in {str(store_root), str(store_root.resolve())}:
        message = message.replace(root + os.sep, "").replace(root, "<model store>")
    return message


def train_job(store: ModelStore, job_id: str, params: TrainingParams, parent_pid: int) -> int:
    """Train and publish one job, report how it ended; exit status 0 unless it failed."""
    from trainer_service.training import TrainingCancelled, train_and_publish  # noqa: PLC0415
    from trainer_service.training.checkpoint import Checkpoint  # noqa: PLC0415

    deadline = time.monotonic() + params.max_train_seconds
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    files = JobFiles(store)
    checkpoint = Checkpoint(files.checkpoint_path(job_id))
    resume = checkpoint.load()  # a job its runner requeued goes on where it was saved
    progress = ProgressFile(files.progress_path(job_id), resume.history if resume else [])

    def should_stop() -> bool:
        if time.monotonic() > deadline:
            raise TimeLimitExceeded
        return bool(terminated) or (parent_pid > 0 and os.getppid() != parent_pid)

    try:
        claim = fence.claim(store, params.model_name, job_id)
        outcome = train_and_publish(
            params,
            store,
            job_id=job_id,
            artifacts_dir=files.job_dir(job_id),
            on_epoch=progress.epoch,
            should_stop=should_stop,
            staging=claim.path,
            before_publish=claim.check,
            checkpoint=checkpoint,
            resume=resume,
        )
    except (TrainingCancelled, fence.Revoked) as exc:
        if terminated and not isinstance(exc, fence.Revoked):
            _log.info("job %s: stopped by SIGTERM", job_id)
            progress.result("failed", error=STOPPED_ERROR, end=EndReason.INTERRUPTED)
            return EXIT_STOPPED
        _log.info("job %s: stopped: %s", job_id, exc)
        progress.result("cancelled")
        return 0
    except TimeLimitExceeded:
        _log.info("job %s: time limit of %d s exceeded", job_id, params.max_train_seconds)
        progress.result("failed", error=time_limit_error(params), end=EndReason.TIME_LIMIT)
        return 1
    except Exception as exc:  # every failure becomes the job's error, not a crash
        _log.error("job %s: training failed: %s: %s", job_id, type(exc).__name__, exc)
        progress.result("failed", error=public_error(exc, store.root), end=EndReason.ERROR)
        return 1
    metrics = finite_metrics(outcome.metrics)
    progress.result("succeeded", version=outcome.version.version, metrics=metrics)
    return 0


def warm_up() -> None:
    """Run a tiny job into a throwaway store, so the real job pays for no import (TensorFlow,
    Keras, the TFLite converter, matplotlib) and no first walk of any code path."""
    from trainer_service.training import train_and_publish  # noqa: PLC0415

    params = TrainingParams.model_validate(
        {"n_samples": 50, "epochs": 2, "batch_size": 10, "seed": 0}
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="squarenet-warm-up-") as folder:
        root = Path(folder)
        train_and_publish(params, ModelStore(root / "store"), job_id="warm-up", artifacts_dir=root)
    _log.info("job process %d warm in %.1f s", os.getpid(), time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer_service.runner.job_process")
    parser.add_argument("--model-store", type=Path, required=True)
    parser.add_argument("--job-id", help="the job to train now (with --params)")
    parser.add_argument("--params", help="the job's hyperparameters as JSON")
    parser.add_argument("--warm", action="store_true", help="wait for the job on stdin")
    parser.add_argument("--parent-pid", type=int, default=0, help="die with this process")
    parser.add_argument("--ready-fd", type=int, default=None, help="closed once warm (--warm)")
    args = parser.parse_args(argv)
    if args.parent_pid:  # the kernel SIGKILLs us when the runner dies; exit if it died already
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != args.parent_pid:
            raise SystemExit(3)
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not args.warm:
        try:
            check_writable(args.model_store / "jobs")
        except OSError as exc:  # one line (the pod's termination message), no traceback
            print(f"the model store is not writable: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_STORE_NOT_WRITABLE
    store = ModelStore(args.model_store)
    if args.warm:
        warm_up()
        if args.ready_fd is not None:  # the runner counts warm processes for /readyz
            os.write(args.ready_fd, b"warm")
            os.close(args.ready_fd)
        line = sys.stdin.readline()
        if not line.strip():
            return 0
        message = json.loads(line)
        job_id, params = str(message["job_id"]), TrainingParams.model_validate(message["params"])
    elif args.job_id and args.params:
        job_id, params = args.job_id, TrainingParams.model_validate_json(args.params)
    else:
        parser.error("give --warm, or --job-id and --params")
    return train_job(store, job_id, params, args.parent_pid)


if __name__ == "__main__":
    status = main()
    logging.shutdown()  # then leave without TensorFlow's slow teardown: the result is written
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
