"""How the dispatcher reads a training process's reports and exit, with real processes."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from trainer_service.params import TrainingParams
from trainer_service.runner.job_process import public_error
from trainer_service.runner.records import JobRecord, JobState, Progress, utc_now
from trainer_service.runner.warm import SHUTDOWN_ERROR, TrainingChild, describe_exit

RECORD = JobRecord(
    id="20261129T051500Z-3f9a1c2b",
    state=JobState.RUNNING,
    params=TrainingParams.model_validate({"n_samples": 200, "epochs": 3, "batch_size": 20}),
    progress=Progress(epoch=0, epochs=3),
    created_at=utc_now(),
)


def child_writing(lines: list[str], *, then: str = "") -> TrainingChild:
    """A real process that writes ``lines`` to a report pipe the way job_process does."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    code = (
        "import os, sys\n"
        f"os.write({write_end}, sys.argv[1].encode())\n"
        f"os.close({write_end})\n"
        f"{then}\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, "".join(lines)], pass_fds=(write_end,))
    os.close(write_end)
    return TrainingChild(record=RECORD, process=process, reports=read_end, progress=RECORD.progress)


def finished(child: TrainingChild) -> TrainingChild:
    child.process.wait(timeout=30)
    child.drain()
    return child


def test_epochs_and_the_result_are_read_and_garbage_is_skipped() -> None:
    child = finished(
        child_writing(
            [
                '{"event": "epoch", "epoch": 1, "epochs": 3, "loss": 2.5, "val_loss": null}\n',
                "not json\n",
                "[1, 2]\n",
                '{"event": "epoch", "epoch": "two", "epochs": 3}\n',
                '{"event": "epoch", "epoch": 2, "epochs": 3, "loss": 1.5, "val_loss": 1.0}\n',
                '{"event": "succeeded", "version": 4, "metrics": {"loss": 1.5, "x": "y"}}\n',
            ]
        )
    )
    assert child.progress == Progress(epoch=2, epochs=3)
    assert child.take_epochs() == [
        {"epoch": 1, "loss": 2.5, "val_loss": None},
        {"epoch": 2, "loss": 1.5, "val_loss": 1.0},
    ]
    assert child.take_epochs() == []
    assert child.outcome() == (JobState.SUCCEEDED, {"model_version": 4, "metrics": {"loss": 1.5}})


def test_a_reported_failure_carries_its_message() -> None:
    child = finished(child_writing(['{"event": "failed", "error": "loss diverged"}\n']))
    assert child.outcome() == (JobState.FAILED, {"error": "loss diverged"})


def test_a_process_that_exits_without_a_result_fails_with_its_status() -> None:
    child = finished(child_writing([], then="raise SystemExit(3)"))
    assert child.outcome() == (
        JobState.FAILED,
        {"error": "training process exited with status 3 without a result"},
    )


def test_a_killed_process_fails_with_the_signal() -> None:
    child = child_writing([], then="import time; time.sleep(60)")
    child.kill("shutdown")
    assert child.process.returncode == -signal.SIGKILL
    assert child.outcome() == (JobState.FAILED, {"error": SHUTDOWN_ERROR})


def test_a_half_written_last_line_is_not_taken_for_a_result() -> None:
    child = finished(child_writing(['{"event": "succeeded", "vers']))
    assert child.result is None
    assert child.outcome()[0] is JobState.FAILED


@pytest.mark.parametrize(
    ("returncode", "reason"),
    [
        (-signal.SIGKILL, "training process killed by SIGKILL (out of memory?)"),
        (-signal.SIGSEGV, "training process killed by SIGSEGV"),
        (-signal.SIGTERM, "training process killed by SIGTERM"),
        (-200, "training process killed by signal 200"),
        (1, "training process exited with status 1 without a result"),
    ],
)
def test_describe_exit_names_the_cause(returncode: int, reason: str) -> None:
    assert describe_exit(returncode) == reason


def test_a_failed_jobs_error_tells_the_cause_without_server_paths(tmp_path: Path) -> None:
    store = tmp_path / "models"
    full = OSError(errno.ENOSPC, "No space left on device", str(store / ".tmp-7/model.tflite"))
    assert public_error(full, store) == (
        "No space left on device (ENOSPC) while training or publishing the model"
    )
    other = ValueError(f"cannot read {store}/jobs/x/params.json; store {store} is odd")
    assert (
        public_error(other, store) == "cannot read jobs/x/params.json; store <model store> is odd"
    )
    assert public_error(RuntimeError(), store) == "RuntimeError"
