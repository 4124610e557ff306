"""Real runner processes on a temp store, and a look at their children through /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from support import patient, wait_for

from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.runner.book import Job, JobBook

# Finishes in a second or two once TensorFlow is imported.
QUICK = TrainingParams.model_validate({"n_samples": 200, "epochs": 3, "batch_size": 20, "seed": 1})
# Runs for minutes (one gradient step per row, many epochs): there is time to interrupt it.
LONG = TrainingParams.model_validate(
    {"n_samples": 100_000, "epochs": 10_000, "batch_size": 1, "seed": 2}
)
# About ten seconds of many short epochs (one gradient step per row): checkpoints are saved
# while it trains, so it can be stopped halfway and resumed.
RESUMABLE = TrainingParams.model_validate(
    {"n_samples": 2_000, "epochs": 600, "batch_size": 1, "seed": 3}
)
# Generous bounds: TensorFlow's import alone takes seconds on a busy 2-core machine.
JOB_TIMEOUT = 180.0


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


def job_process_of(job_id: str) -> int | None:
    """The pid of the process training ``job_id`` (it logs the job id as it starts)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"trainer_service.runner.job_process" in environ and job_id.encode() in environ:
            return int(entry)
    return None


class RunnerProcess:
    """``python -m trainer_service.control_loop`` (local executor) on the test's store."""

    def __init__(self, store: ModelStore, log_path: Path, **settings: str) -> None:
        self.log_path = log_path
        env = {
            **os.environ,
            "SQUARENET_MODEL_STORE": str(store.root),
            **{f"SQUARENET_{name.upper()}": value for name, value in settings.items()},
        }
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "trainer_service.control_loop"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.pid = self.process.pid
        self.seen_children: set[int] = set()

    def job_processes(self) -> list[int]:
        """Its children now (the warm spare and the training processes)."""
        pids = children_of(self.pid)
        self.seen_children.update(pids)
        return pids

    def training_process(self, job_id: str) -> int:
        """The pid of the child that trains ``job_id``; waits for the assignment."""
        wait_for(lambda: f"job {job_id} assigned" in self.log(), JOB_TIMEOUT, "the assignment")
        line = next(line for line in self.log().splitlines() if f"job {job_id} assigned" in line)
        pid = int(line.rsplit(" ", 1)[1])
        self.seen_children.add(pid)
        return pid

    def log(self) -> str:
        """Everything the runner and its children printed so far."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as the OOM killer or a node failure would."""
        self.process.kill()
        self.process.wait(timeout=patient(10))


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
