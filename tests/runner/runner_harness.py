"""Real dispatcher processes on a temp store, and a look at their children through /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from support import wait_for

from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.runner.book import Job, JobBook

# Finishes in a second or two once TensorFlow is imported.
QUICK = TrainingParams.model_validate({"n_samples": 200, "epochs": 3, "batch_size": 20, "seed": 1})
# Runs for minutes (one gradient step per row, many epochs): there is time to interrupt it.
LONG = TrainingParams.model_validate(
    {"n_samples": 1000, "epochs": 10_000, "batch_size": 1, "seed": 2}
)
# Generous bounds: TensorFlow's import alone takes seconds on a busy 2-core machine.
JOB_TIMEOUT = 120.0


def process_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process, or None when it no longer exists."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def process_gone(pid: int) -> bool:
    """True when the process has exited (a zombie waiting for its reaper counts as gone)."""
    state = process_state(pid)
    return state is None or state[0] in ("Z", "X")


def children_of(parent: int) -> list[int]:
    """Live processes whose parent is ``parent``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            state = process_state(int(entry))
            if state is not None and state[1] == parent and state[0] not in ("Z", "X"):
                found.append(int(entry))
    return found


class DispatcherProcess:
    """``python -m trainer_service.runner.local`` on the test's store, its log in a file."""

    def __init__(self, store: ModelStore, log_path: Path, *flags: str) -> None:
        self.log_path = log_path
        command = [
            sys.executable,
            "-m",
            "trainer_service.runner.local",
            "--model-store",
            str(store.root),
            "--poll-interval",
            "0.1",
            "--heartbeat-interval",
            "0.2",
            *flags,
        ]
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid
        self.seen_children: set[int] = set()

    def training_process(self) -> int:
        """The pid of the (one) training process this dispatcher runs now; waits for it."""
        pids = wait_for(lambda: children_of(self.pid), JOB_TIMEOUT, "a training process")
        assert len(pids) == 1, pids
        self.seen_children.update(pids)
        return pids[0]

    def log(self) -> str:
        """Everything the dispatcher and its children printed so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM and the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a node failure would."""
        self.process.kill()
        self.process.wait(timeout=10)


def wait_until_finished(book: JobBook, job_id: str, timeout: float = JOB_TIMEOUT) -> Job:
    """The job once it has reached a final state."""
    return wait_for(
        lambda: job if (job := book.get(job_id)).state.finished else None,
        timeout,
        f"job {job_id} to finish",
        every=0.1,
    )


def wait_until_training(book: JobBook, job_id: str, timeout: float = JOB_TIMEOUT) -> Job:
    """The job once it has finished its first epoch (or ended: the caller checks which)."""
    return wait_for(
        lambda: (
            job if (job := book.get(job_id)).progress.epoch >= 1 or job.state.finished else None
        ),
        timeout,
        f"job {job_id} to train",
        every=0.1,
    )
