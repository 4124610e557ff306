"""The real trainer and predictor as processes on one temp store, for CLI and end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from support import free_port, predictor_answers, trainer_ready, wait_for

BIN = Path(sys.executable).parent
START_TIMEOUT = 120.0


@dataclass
class LiveServices:
    """Where the running services listen, and their store and logs."""

    store: Path
    trainer_url: str
    predictor_target: str
    logs: Path

    def cli_env(self) -> dict[str, str]:
        """Environment pointing the ``squarenet`` CLI at these services."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQUARENET_")}
        env["SQUARENET_TRAINER_URL"] = self.trainer_url
        env["SQUARENET_PREDICTOR"] = self.predictor_target
        return env


def service_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without SQUARENET_* settings that would change the services."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SQUARENET_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def start(argv: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a console script in its own process group, output into ``log``."""
    with log.open("ab") as handle:
        return subprocess.Popen(
            [str(BIN / argv[0]), *argv[1:]],
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def stop(process: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM the process group, SIGKILL it if it does not exit in time; return the code."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        code = process.wait()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    return code


def _up(process: subprocess.Popen[bytes], log: Path, answers: Callable[[], bool]) -> bool:
    """Whether the service answers; fail at once (with its log) when it exited instead."""
    if process.poll() is not None:
        raise AssertionError(f"{log.stem} exited {process.returncode}:\n{log.read_text()[-3000:]}")
    return answers()


@contextlib.contextmanager
def predictor_on(store: Path, logs: Path) -> Iterator[str]:
    """A real ``squarenet-predictor`` on ``store``; yields HOST:PORT."""
    port = free_port()
    log = logs / f"predictor-{port}.log"
    process = start(
        ["squarenet-predictor", "--model-store", str(store), "--port", str(port),
         "--metrics-port", "0", "--poll-interval", "0.2"],
        log,
        service_env(),
    )  # fmt: skip
    target = f"127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _up(process, log, lambda: predictor_answers(target)),
            START_TIMEOUT,
            "the predictor to answer health checks",
        )
        yield target
    finally:
        stop(process)


@contextlib.contextmanager
def trainer_on(store: Path, logs: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """A real ``squarenet-trainer`` on ``store``; yields its base URL."""
    port = free_port()
    log = logs / f"trainer-{port}.log"
    process = start(
        ["squarenet-trainer", "--model-store", str(store), "--port", str(port)],
        log,
        service_env(env),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: _up(process, log, lambda: trainer_ready(url)),
            START_TIMEOUT,
            "the trainer to be ready",
        )
        yield url
    finally:
        stop(process)


@contextlib.contextmanager
def live_services(root: Path) -> Iterator[LiveServices]:
    """Trainer and predictor sharing one store under ``root``."""
    store, logs = root / "store", root / "logs"
    store.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    with trainer_on(store, logs) as url, predictor_on(store, logs) as target:
        yield LiveServices(store, url, target, logs)
