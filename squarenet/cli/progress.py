"""Follow a training job to its end with a live progress bar fed by its event stream.

The trainer replays the job's history to a late or reconnecting client, so following is
just: read events until the final ``state`` event; if the stream breaks first, reconnect
(resuming after the last epoch seen). Only breaks in a row count: a stream that brought
a new epoch before it broke starts the count again, so a long job on a flaky network is
followed to its end. After ``RECONNECT_ATTEMPTS`` breaks in a row, read the job itself.
A trainer holding all the streams it can (503) is a break too, waited out as it asks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any, Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from squarenet.cli.errors import CliError, ExitCode
from squarenet.cli.render import number
from squarenet.cli.trainer_client import (
    TERMINAL_STATES,
    JobDocument,
    StreamBusy,
    TrainerClient,
)

_log = logging.getLogger(__name__)

RECONNECT_ATTEMPTS: Final = 5
RECONNECT_PAUSE: Final = 1.0


def _losses(data: Mapping[str, Any]) -> str:
    return f"loss {number(data.get('loss'))}  val_loss {number(data.get('val_loss'))}"


def make_progress(console: Console) -> Progress:
    """The bar: state, epochs done of total, the latest losses, elapsed and remaining time."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TextColumn("{task.fields[losses]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def follow_job(client: TrainerClient, job: JobDocument, console: Console) -> JobDocument:
    """Show the job's progress until it ends; return its final document."""
    job_id = str(job["id"])
    epochs = _total_epochs(job)
    with make_progress(console) as progress:
        task = progress.add_task(
            f"job {job_id} {job.get('state', 'QUEUED')}", total=epochs, losses=""
        )
        final = _read_until_final(client, job_id, progress, task)
        progress.update(task, description=f"job {job_id} {final.get('state')}")
    return final


def _total_epochs(job: JobDocument) -> int | None:
    params = job.get("params")
    if isinstance(params, Mapping) and isinstance(params.get("epochs"), int):
        return int(params["epochs"])
    return None


def _read_until_final(
    client: TrainerClient, job_id: str, progress: Progress, task: TaskID
) -> JobDocument:
    last_epoch = 0
    failures = 0  # breaks in a row, without any event in between
    while True:
        pause = RECONNECT_PAUSE
        try:
            for event, data in client.job_events(job_id, after_epoch=last_epoch):
                if event == "epoch":
                    epoch = int(data.get("epoch") or 0)
                    if epoch > last_epoch:
                        failures = 0  # the stream brought something new: a fresh count
                    last_epoch = max(last_epoch, epoch)
                    progress.update(
                        task,
                        description=f"job {job_id} RUNNING",
                        completed=last_epoch,
                        total=data.get("epochs") or progress.tasks[0].total,
                        losses=_losses(data),
                    )
                elif event == "state" and data.get("state") in TERMINAL_STATES:
                    return data
                elif event == "state":
                    progress.update(task, description=f"job {job_id} {data.get('state')}")
        except StreamBusy as exc:
            failures += 1
            pause = max(pause, exc.retry_after)
            _log.info("trainer busy for job %s (%s); retrying", job_id, exc.message)
            if failures >= RECONNECT_ATTEMPTS:
                raise
        except CliError as exc:
            if exc.code is not ExitCode.UNREACHABLE:
                raise
            failures += 1
            _log.info("event stream of job %s broke (%s); reconnecting", job_id, exc.message)
            if failures >= RECONNECT_ATTEMPTS:
                raise
        else:
            failures += 1  # the stream ended without a final state
            if failures >= RECONNECT_ATTEMPTS:
                job = client.get_job(job_id)
                if job.get("state") in TERMINAL_STATES:
                    return job
                raise CliError(
                    f"event stream of job {job_id} keeps ending before the job does",
                    ExitCode.SERVICE_ERROR,
                )
        time.sleep(pause)
