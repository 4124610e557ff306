"""The local stack: ``squarenet-trainer`` (gunicorn) and ``squarenet-predictor`` as processes.

One place says how the services start on this machine, when they count as ready and how
they stop, for ``make demo``, the tests and the benchmarks alike::

    with local_stack(store, logs) as stack:          # free ports unless given
        httpx.post(f"{stack.trainer_url}/v1/jobs")   # ready: /readyz 200
        grpc.insecure_channel(stack.predictor_target) # ready: the health service answers

Each service runs in a session of its own (a Ctrl-C meant for the caller does not reach
it) with its output in a log file. It is stopped by its process group: SIGTERM, a grace
period, then SIGKILL; any process it started that left the group is found by a variable
only this start put in its environment and killed by PID. A service that exits while the
caller waits for it fails at once with the end of its log.

The services are other processes: this module imports only client libraries (httpx, grpc's
channel and health stub), never Flask, a gRPC server or TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

import grpc
import httpx

T = TypeVar("T")

LOOPBACK: Final = "127.0.0.1"
START_TIMEOUT: Final = 120.0  # TensorFlow's import alone takes seconds on a busy 2-core machine
STOP_TIMEOUT: Final = 20.0
RUN_MARKER: Final = "SQUARENET_STACK_RUN"
"""Set in every service's environment (and so its children's) to one value per start."""
_MODULES: Final = {
    "squarenet-trainer": "trainer_service.cli",
    "squarenet-predictor": "predictor_service.cli",
}


class StackError(Exception):
    """A service did not start, or exited while it was waited for; the message says why."""


# --- looking at services ----------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def trainer_ready(base_url: str) -> bool:
    """``GET /readyz`` answers 200: workers up, store writable, job runner alive."""
    try:
        return httpx.get(f"{base_url}/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def predictor_answers(target: str) -> bool:
    """The predictor's health service answers at HOST:PORT (NOT_SERVING counts: no model yet)."""
    # the health stubs come with the predictor's extra, which a stack needs anyway
    from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(target) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2.0)
        except grpc.RpcError:
            return False
    return True


def command_of(name: str) -> list[str]:
    """The console script next to this interpreter, on PATH, or its module run by this one."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return [str(beside)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", _MODULES[name]]


# --- one service ------------------------------------------------------------------------


@dataclass
class Service:
    """A started service process, its log, and the marker its environment carries."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    marker: str

    @property
    def pid(self) -> int:
        """The service's process id (gunicorn's master for the trainer)."""
        return self.process.pid

    def log(self, last_lines: int | None = None) -> str:
        """What the service printed so far (only the last lines when asked)."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return text if last_lines is None else "\n".join(text.splitlines()[-last_lines:])

    def check_alive(self) -> None:
        """Raise StackError, with the end of the log, when the process has exited."""
        if self.process.poll() is not None:
            raise StackError(
                f"{self.name} exited with code {self.process.returncode}; its log "
                f"{self.log_path} ends with:\n{self.log(20)}"
            )

    def wait_until(
        self,
        check: Callable[[], T | None],
        what: str,
        timeout: float = START_TIMEOUT,
        every: float = 0.1,
    ) -> T:
        """Poll ``check`` every ``every`` s until it gives something truthy; fail fast if the
        service exits."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise StackError(f"timed out after {timeout:g}s waiting for {what}")
            time.sleep(every)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM the process group, SIGKILL it after ``timeout``; return the exit code."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            code = self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # workers that outlived their master
        for pid in processes_marked(self.marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return code


@dataclass
class Trainer(Service):
    """A started ``squarenet-trainer``."""

    base_url: str
    store: Path


@dataclass
class Predictor(Service):
    """A started ``squarenet-predictor``."""

    target: str
    port: int
    metrics_port: int


def processes_marked(marker: str, variable: str = RUN_MARKER) -> list[int]:
    """PIDs of processes whose environment carries ``variable=marker`` (Linux /proc)."""
    needle = f"{variable}={marker}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def _launch(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None
) -> tuple[subprocess.Popen[bytes], str]:
    marker = secrets.token_hex(8)
    environment = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
    environment[RUN_MARKER] = marker
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own console scripts, no shell
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
    return process, marker


def start_trainer(
    store: Path,
    log_path: Path,
    *args: str,
    port: int = 0,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Trainer:
    """Start ``squarenet-trainer`` on loopback (a free port unless given); do not wait.

    ``env`` is the whole environment (default: this process's); ``args`` are more flags;
    ``command`` replaces the console script (the flags stay), e.g. one run in a namespace.
    """
    port = port or free_port()
    argv = [*(command or command_of("squarenet-trainer")), "--model-store", str(store),
            "--host", LOOPBACK, "--port", str(port), *args]  # fmt: skip
    process, marker = _launch(argv, log_path, env)
    url = f"http://{LOOPBACK}:{port}"
    return Trainer("squarenet-trainer", process, log_path, marker, url, store)


def start_predictor(
    store: Path,
    log_path: Path,
    *args: str,
    port: int = 0,
    metrics_port: int = 0,
    env: Mapping[str, str] | None = None,
    command: Sequence[str] | None = None,
) -> Predictor:
    """Start ``squarenet-predictor`` on loopback (free ports unless given); do not wait.

    ``command`` replaces the console script (the flags stay), e.g. a probe around its main.
    """
    port, metrics_port = port or free_port(), metrics_port or free_port()
    argv = [*(command or command_of("squarenet-predictor")), "--model-store", str(store),
            "--host", LOOPBACK, "--port", str(port), "--metrics-port", str(metrics_port),
            *args]  # fmt: skip
    process, marker = _launch(argv, log_path, env)
    target = f"{LOOPBACK}:{port}"
    return Predictor("squarenet-predictor", process, log_path, marker, target, port, metrics_port)


@contextlib.contextmanager
def running_trainer(
    store: Path,
    log_path: Path,
    *args: str,
    port: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[Trainer]:
    """A trainer that is ready (``/readyz`` 200) inside the block and stopped after it."""
    trainer = start_trainer(store, log_path, *args, port=port, env=env)
    try:
        trainer.wait_until(
            lambda: trainer_ready(trainer.base_url), "the trainer to be ready", timeout
        )
        yield trainer
    finally:
        trainer.stop()


@contextlib.contextmanager
def running_predictor(
    store: Path,
    log_path: Path,
    *args: str,
    port: int = 0,
    metrics_port: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[Predictor]:
    """A predictor whose health service answers inside the block, stopped after it."""
    predictor = start_predictor(
        store, log_path, *args, port=port, metrics_port=metrics_port, env=env
    )
    try:
        predictor.wait_until(
            lambda: predictor_answers(predictor.target), "the predictor to answer", timeout
        )
        yield predictor
    finally:
        predictor.stop()


# --- both -------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalStack:
    """Both services on one store: where they listen, and their processes."""

    store: Path
    logs: Path
    trainer: Trainer
    predictor: Predictor
    env: Mapping[str, str]

    @property
    def trainer_url(self) -> str:
        """The trainer's base URL."""
        return self.trainer.base_url

    @property
    def predictor_target(self) -> str:
        """The predictor's HOST:PORT."""
        return self.predictor.target

    def client_env(self) -> dict[str, str]:
        """The services' environment, pointing the ``squarenet`` CLI at them."""
        env = dict(self.env)
        env["SQUARENET_TRAINER_URL"] = self.trainer_url
        env["SQUARENET_PREDICTOR"] = self.predictor_target
        return env


@contextlib.contextmanager
def local_stack(
    store: Path,
    logs: Path,
    *,
    trainer_args: Sequence[str] = (),
    predictor_args: Sequence[str] = (),
    trainer_port: int = 0,
    predictor_port: int = 0,
    metrics_port: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = START_TIMEOUT,
) -> Iterator[LocalStack]:
    """Trainer and predictor on ``store``, both ready inside the block, both stopped after.

    The trainer knows the predictor (``--predictor``), for the live error it shows. Logs go
    to ``logs/trainer.log`` and ``logs/predictor.log``.
    """
    store.mkdir(parents=True, exist_ok=True)
    predictor_port = predictor_port or free_port()
    with (
        running_trainer(
            store, logs / "trainer.log", *trainer_args,
            "--predictor", f"{LOOPBACK}:{predictor_port}",
            port=trainer_port, env=env, timeout=timeout,
        ) as trainer,
        running_predictor(
            store, logs / "predictor.log", *predictor_args,
            port=predictor_port, metrics_port=metrics_port, env=env, timeout=timeout,
        ) as predictor,
    ):  # fmt: skip
        yield LocalStack(store, logs, trainer, predictor, dict(os.environ if env is None else env))
