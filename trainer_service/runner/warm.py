"""The dispatcher's handle on one job's training process, and what that process reported.

The child (``trainer_service.runner.job_process``) writes JSON lines to a pipe; this side reads
them without blocking, keeps the epochs not yet written to the store, and turns the child's
last words (or its exit status) into the job's final state.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from squarenet.store import ModelStore
from trainer_service.runner.records import JobRecord, JobState, Progress, finite_or_none

_log = logging.getLogger("trainer_service.runner.local")
_READ_CHUNK = 1 << 16
SHUTDOWN_ERROR = "interrupted: trainer shutting down"


@dataclass
class TrainingChild:
    """One running training process of this dispatcher."""

    record: JobRecord
    process: subprocess.Popen[bytes]
    reports: int | None  # read end of the report pipe; None once closed
    progress: Progress
    next_heartbeat: float = 0.0
    next_epoch_flush: float = 0.0
    buffer: bytes = b""
    pending_epochs: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None
    stop_reason: str | None = None  # "cancel", "shutdown" or "lost" once we kill it

    @classmethod
    def start(cls, store: ModelStore, record: JobRecord) -> TrainingChild:
        """Start ``python -m trainer_service.runner.job_process`` for a claimed job (OSError if not)."""
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        command = [
            sys.executable,
            "-m",
            "trainer_service.runner.job_process",
            "--model-store",
            str(store.root.resolve()),
            "--job-id",
            record.id,
            "--report-fd",
            str(write_end),
            "--parent-pid",
            str(os.getpid()),
        ]
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            process = subprocess.Popen(  # noqa: S603 - our own module, no shell
                command,
                pass_fds=(write_end,),
                env=env,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in a terminal reaches the dispatcher only
            )
        except BaseException:
            os.close(read_end)
            raise
        finally:
            os.close(write_end)
        return cls(record=record, process=process, reports=read_end, progress=record.progress)

    @property
    def job_id(self) -> str:
        """The job this process trains."""
        return self.record.id

    def exited(self) -> bool:
        """True once the process has ended."""
        return self.process.poll() is not None

    def read_reports(self) -> None:
        """Take what the child wrote so far; close the pipe at its end."""
        while self.reports is not None:
            try:
                chunk = os.read(self.reports, _READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                os.close(self.reports)
                self.reports = None
                break
            self.buffer += chunk
            *lines, self.buffer = self.buffer.split(b"\n")
            for line in lines:
                self._on_report(line)

    def kill(self, reason: str) -> None:
        """SIGKILL the process, wait for it and read its last reports."""
        self.stop_reason = reason
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        self.process.wait()
        self.drain()

    def drain(self) -> None:
        """Read the pipe to its end (the process is gone, so the end comes)."""
        if self.reports is not None:
            os.set_blocking(self.reports, True)
            self.read_reports()

    def take_epochs(self) -> list[dict[str, Any]]:
        """Epochs reported since the last call, to append to the job's history."""
        rows, self.pending_epochs = self.pending_epochs, []
        return rows

    def outcome(self) -> tuple[JobState, dict[str, Any]]:
        """The final state and record fields this process's end stands for."""
        result = self.result or {}
        event = result.get("event")
        if event == "succeeded" and isinstance(result.get("version"), int):
            metrics = result.get("metrics")
            return JobState.SUCCEEDED, {
                "model_version": result["version"],
                "metrics": {
                    str(name): float(value)
                    for name, value in (metrics if isinstance(metrics, dict) else {}).items()
                    if _finite(value) is not None
                },
            }
        if self.stop_reason == "shutdown":
            return JobState.FAILED, {"error": SHUTDOWN_ERROR}
        if self.stop_reason == "cancel" or event == "cancelled":
            return JobState.CANCELLED, {}
        if event == "failed":
            return JobState.FAILED, {"error": str(result.get("error") or "training failed")}
        return JobState.FAILED, {"error": describe_exit(self.process.returncode)}

    def _on_report(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            _log.warning("job %s: unreadable report from the training process", self.job_id)
            return
        if not isinstance(message, dict):
            return
        event = message.get("event")
        if event == "epoch":
            epoch, epochs = message.get("epoch"), message.get("epochs")
            if not isinstance(epoch, int) or not isinstance(epochs, int):
                return
            self.progress = Progress(epoch=epoch, epochs=epochs)
            self.pending_epochs.append(
                {
                    "epoch": epoch,
                    "loss": _finite(message.get("loss")),
                    "val_loss": _finite(message.get("val_loss")),
                }
            )
        elif event in ("succeeded", "failed", "cancelled"):
            self.result = message


def describe_exit(returncode: int) -> str:
    """Why a training process ended without reporting a result."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if returncode == -signal.SIGKILL else ""
        return f"training process killed by {name}{hint}"
    return f"training process exited with status {returncode} without a result"


def _finite(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return finite_or_none(float(value))
