"""gunicorn configuration of ``squarenet-trainer``: options and the master's hooks.

The master starts the job runner (``python -m trainer_service.control_loop``) before it forks
any worker, so every worker's settings carry the runner's pid for ``/readyz``; on exit it
stops the runner and waits for it. Workers are threaded (``gthread``): their heartbeat comes
from the worker's main loop, not from requests, so a long event stream or a slow client
never trips the worker timeout; each open stream holds one thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from trainer_service.api.events import STREAMS_CLOSING
from trainer_service.settings import Settings

RUNNER_STOP_SECONDS = 20.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
WORKER_TIMEOUT_SECONDS = 30
SHM = Path("/dev/shm")  # noqa: S108 - gunicorn heartbeat files belong in memory
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"

log = logging.getLogger("squarenet.trainer.launcher")


class Launcher(Protocol):
    """What the hooks need from the gunicorn application object (``cli.TrainerApplication``)."""

    settings: Settings
    runner: subprocess.Popen[bytes] | None
    metrics_dir: Path
    stopping: bool
    runner_failed: bool


class Arbiter(Protocol):
    """The part of gunicorn's arbiter the hooks use."""

    app: Launcher


class Worker(Protocol):
    """The part of a gunicorn worker the hooks use."""

    pid: int


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """Everything (gunicorn's own lines included) to stdout, one line per event."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"line": {"format": LOG_FORMAT}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["stdout"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            "gunicorn.access": {"level": level, "handlers": [], "propagate": True},
        },
    }


def runner_command(settings: Settings) -> list[str]:
    """The job runner of this replica (its other settings come in the environment)."""
    return [
        sys.executable,
        "-m",
        "trainer_service.control_loop",
        "--model-store",
        str(settings.model_store),
    ]


def _die_with_parent() -> None:
    """In the runner before exec: SIGTERM it if the master dies, even by SIGKILL (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def runner_environment(settings: Settings) -> dict[str, str]:
    """The runner's environment: ours plus every setting, less the token and metrics folder."""
    withheld = {"SQUARENET_API_TOKEN", "PROMETHEUS_MULTIPROC_DIR"}
    env = {name: value for name, value in os.environ.items() if name not in withheld}
    for name, value in settings.model_dump(exclude={"api_token", "runner_pid"}).items():
        key = f"SQUARENET_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def on_starting(server: Arbiter) -> None:
    """Start the job runner before any worker is forked, and tell the workers its pid."""
    launcher = server.app
    command = runner_command(launcher.settings)
    # its own session: a Ctrl-C meant for the terminal's foreground group must not stop it
    # behind the master's back (the master stops it in on_exit), and it dies with the master
    launcher.runner = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        command,
        env=runner_environment(launcher.settings),
        start_new_session=True,
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - no other thread exists yet
    )
    pid = launcher.runner.pid
    launcher.settings = launcher.settings.model_copy(update={"runner_pid": pid})
    threading.Thread(
        target=watch_runner, args=(launcher,), name="job-runner-watch", daemon=True
    ).start()
    log.info(
        "job runner started pid=%d executor=%s",
        pid,
        launcher.settings.executor,
    )


def watch_runner(launcher: Launcher) -> None:
    """A replica without its job runner would queue jobs forever: stop so it gets restarted.

    Only the master stops the runner (it has a session of its own), so any other exit is a
    failure and ``squarenet-trainer`` then exits 1 for its supervisor to see. The code
    logged may read 0 when the master's own child reaping collected the status first.
    """
    process = launcher.runner
    if process is None:
        return
    code = process.wait()
    if launcher.stopping:
        return
    launcher.runner_failed = True
    log.error(
        "job runner pid=%d exited code=%s: stopping the trainer so it can be restarted",
        process.pid,
        code,
    )
    os.kill(os.getpid(), signal.SIGTERM)


def post_worker_init(worker: Worker) -> None:
    """On SIGTERM, end this worker's event streams first so the graceful stop is quick."""
    previous = signal.getsignal(signal.SIGTERM)

    def close_streams_then(signum: int, frame: FrameType | None) -> None:
        STREAMS_CLOSING.set()
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, close_streams_then)
    signal.siginterrupt(signal.SIGTERM, False)


def child_exit(server: Arbiter, worker: Worker) -> None:
    """A worker is gone: merge its live gauges away (prometheus-client multiprocess mode)."""
    from prometheus_client import multiprocess  # noqa: PLC0415 - only after the env is set

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]


def on_exit(server: Arbiter) -> None:
    """Stop the job runner (it fails or requeues its jobs itself) and clean up."""
    launcher = server.app
    launcher.stopping = True
    stop_runner(launcher.runner)
    shutil.rmtree(launcher.metrics_dir, ignore_errors=True)


def stop_runner(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the job runner, wait for it, SIGKILL it if it hangs."""
    if process is None:
        return
    try:
        process.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        code = process.wait(timeout=RUNNER_STOP_SECONDS)
    except subprocess.TimeoutExpired:
        log.error(
            "job runner pid=%d did not stop in %ss: killing it",
            process.pid,
            RUNNER_STOP_SECONDS,
        )
        process.kill()
        code = process.wait()
    log.info("job runner stopped pid=%d code=%s", process.pid, code)


def gunicorn_options(settings: Settings, log_level: str = "INFO") -> dict[str, Any]:
    """The gunicorn settings of one trainer replica."""
    options: dict[str, Any] = {
        "bind": [f"[{settings.host}]:{settings.port}" if ":" in settings.host
                 else f"{settings.host}:{settings.port}"],
        "workers": settings.workers,
        "worker_class": "gthread",
        "threads": settings.threads,
        "timeout": WORKER_TIMEOUT_SECONDS,
        "graceful_timeout": settings.graceful_timeout,
        "keepalive": 5,
        "logconfig_dict": logging_config(log_level),
        "control_socket_disable": True,
        "proc_name": "squarenet-trainer",
        "on_starting": on_starting,
        "post_worker_init": post_worker_init,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }  # fmt: skip
    if SHM.is_dir() and os.access(SHM, os.W_OK):
        options["worker_tmp_dir"] = str(SHM)
    return options
