"""``make demo``: train the article's network, serve it, show where it fails, stop everything.

Starts ``squarenet-trainer`` and ``squarenet-predictor`` on a local store, submits one
job (the article's hyperparameters unless flags or ``SQUARENET_DEMO_<NAME>`` variables say
otherwise), follows it with the CLI's progress bar, waits until the predictor serves the new
version, prints predictions inside and outside the training domain, the metrics and where
the plots are, then stops both services: on success, on failure and on Ctrl-C alike.

Service logs go to ``<var>/logs/``, plots to ``<var>/plots/``. Exit 0 on success, 1 on
failure (one line saying why), 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console

from squarenet.cli.errors import CliError
from squarenet.cli.hyperparameters import HYPERPARAMETERS, add_hyperparameter_flags, job_body
from squarenet.cli.predictor_client import PredictorClient
from squarenet.cli.progress import follow_job
from squarenet.cli.render import metrics_table, predictions_table
from squarenet.cli.trainer_client import TrainerClient

DEMO_XS = (-10.0, -7.5, -5.0, -2.5, 0.0, 2.5, 5.0, 7.5, 10.0)
PLOTS = ("loss.png", "fit.png")
START_TIMEOUT = 120.0  # TensorFlow's import alone takes seconds on a busy 2-core machine
SERVE_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# Every process the demo starts (and everything they start) carries this variable, so the
# demo can find and stop any that outlive their parent.
RUN_MARKER = "SQUARENET_DEMO_RUN"


class DemoFailed(Exception):
    """The demo cannot go on; the message says why and where to look."""


class Terminated(BaseException):
    """SIGTERM to the demo: unwind like Ctrl-C so the services are stopped."""


# --- configuration ----------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    """Flags win over SQUARENET_DEMO_* variables, which win over the defaults."""
    parser = argparse.ArgumentParser(
        prog="demo.py",
        description=__doc__.splitlines()[0] if __doc__ else None,
        epilog="Each flag also reads SQUARENET_DEMO_<FLAG>, e.g. SQUARENET_DEMO_EPOCHS=20.",
    )

    def env_default(name: str, default: str | None = None) -> str | None:
        return env.get(f"SQUARENET_DEMO_{name.upper()}", default)

    parser.add_argument("--var", default=env_default("var", "var"), help="work folder (var)")
    parser.add_argument("--store", default=env_default("store"), help="model store (<var>/models)")
    parser.add_argument(
        "--trainer-port", type=int, default=int(env_default("trainer_port", "8080") or 8080)
    )
    parser.add_argument(
        "--predictor-port", type=int, default=int(env_default("predictor_port", "50051") or 50051)
    )
    parser.add_argument(
        "--metrics-port", type=int, default=int(env_default("metrics_port", "9102") or 9102)
    )
    add_hyperparameter_flags(parser)
    args = parser.parse_args(argv)
    for item in HYPERPARAMETERS:
        text = env_default(item.name)
        if getattr(args, item.name) is None and text:
            try:
                setattr(args, item.name, item.parse(text))
            except (ValueError, argparse.ArgumentTypeError) as exc:
                parser.error(f"SQUARENET_DEMO_{item.name.upper()}={text!r}: {exc}")
    return args


# --- the services -----------------------------------------------------------------------


@dataclass
class Service:
    """One service process, in its own session so a Ctrl-C reaches the demo only."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        """Launch it with its output going to its log file."""
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(  # noqa: S603 - our own console scripts, no shell
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def check_alive(self) -> None:
        """Fail with the log's last lines when the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise DemoFailed(
                f"{self.name} exited with code {self.process.returncode}; its log "
                f"{shown(self.log_path)} ends with:\n{tail(self.log_path)}"
            )

    def terminate(self) -> None:
        """SIGTERM its whole process group (gunicorn workers, the job runner)."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGTERM)

    def wait_or_kill(self, timeout: float) -> None:
        """Wait for a clean exit; SIGKILL the group if it takes longer than ``timeout``."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)  # workers that outlived their master
        if self._log is not None:
            self._log.close()


def shown(path: Path) -> str:
    """A path as the user typed it: relative to the working folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log, for failure messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def console_script(name: str) -> str:
    """The venv's console script next to this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise DemoFailed(f"{name} is not installed; run `make venv` first")
    return found


def port_is_free(port: int) -> bool:
    """Whether nothing listens on the port (the services bind every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - probing the address the services use
        except OSError:
            return False
    return True


def processes_marked(marker: str) -> list[int]:
    """PIDs of processes whose environment carries ``RUN_MARKER=marker`` (Linux /proc)."""
    needle = f"{RUN_MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


@contextlib.contextmanager
def running(services: list[Service], marker: str, console: Console) -> Iterator[None]:
    """Start the services; on leaving, however it happens, stop them and their children."""
    try:
        for service in services:
            service.start()
            pid = service.process.pid if service.process else "?"
            console.print(f"started {service.name} (pid {pid}, log {shown(service.log_path)})")
        yield
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait_or_kill(STOP_TIMEOUT)
        for pid in processes_marked(marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        console.print("stopped " + " and ".join(service.name for service in services))


def wait_until(what: str, check: Any, services: list[Service], timeout: float) -> Any:
    """Poll ``check`` until it returns something truthy, failing fast if a service died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for service in services:
            service.check_alive()
        result = check()
        if result:
            return result
        time.sleep(0.25)
    raise DemoFailed(f"timed out after {timeout:g}s waiting for {what}")


def trainer_ready(url: str) -> bool:
    """GET /readyz answers 200 (workers up, store writable, job runner alive)."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def predictor_up(target: str) -> bool:
    """The health service answers (NOT_SERVING is expected while the store has no model)."""
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
        except grpc.RpcError:
            return False
    return True


def wait_until_served(target: str, version: int, timeout: float) -> None:
    """Follow WatchModel until the predictor serves ``version`` (or a newer one)."""
    with PredictorClient(target, timeout=timeout) as client:
        try:
            for model in client.watch_model(timeout=timeout):
                if model.version >= version:
                    return
        except CliError as exc:
            raise DemoFailed(
                f"the predictor did not serve version {version} within {timeout:g}s ({exc.message})"
            ) from exc
    raise DemoFailed(f"the predictor ended its watch before serving version {version}")


# --- the demo ---------------------------------------------------------------------------


def run_demo(args: argparse.Namespace, console: Console) -> int:
    """Everything between starting and stopping the services."""
    var = Path(args.var).resolve()
    store = Path(args.store).resolve() if args.store else var / "models"
    logs, plots = var / "logs", var / "plots"
    for folder in (store, logs, plots):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DemoFailed(f"cannot create {shown(folder)}: {exc.strerror or exc}") from exc
    for port in (args.trainer_port, args.predictor_port, args.metrics_port):
        if not port_is_free(port):
            raise DemoFailed(
                f"port {port} is in use; stop what listens there or choose other ports "
                "(SQUARENET_DEMO_TRAINER_PORT, _PREDICTOR_PORT, _METRICS_PORT)"
            )

    marker = secrets.token_hex(8)
    env = {**os.environ, RUN_MARKER: marker, "PYTHONUNBUFFERED": "1"}
    trainer_url = f"http://127.0.0.1:{args.trainer_port}"
    predictor_target = f"127.0.0.1:{args.predictor_port}"
    services = [
        Service(
            "squarenet-trainer",
            [console_script("squarenet-trainer"), "--model-store", str(store),
             "--port", str(args.trainer_port)],
            logs / "trainer.log",
            env,
        ),
        Service(
            "squarenet-predictor",
            [console_script("squarenet-predictor"), "--model-store", str(store),
             "--port", str(args.predictor_port), "--metrics-port", str(args.metrics_port)],
            logs / "predictor.log",
            env,
        ),
    ]  # fmt: skip
    console.print(f"model store {shown(store)}")
    with running(services, marker, console):
        wait_until(
            "the trainer to be ready", lambda: trainer_ready(trainer_url), services, START_TIMEOUT
        )
        wait_until("the predictor to answer health checks", lambda: predictor_up(predictor_target), services, START_TIMEOUT)  # fmt: skip
        console.print(f"trainer ready at {trainer_url}, predictor at {predictor_target}")

        token = os.environ.get("SQUARENET_API_TOKEN") or None
        with TrainerClient(trainer_url, token=token) as trainer:
            body = job_body(args)
            job = trainer.submit_job(body)
            job_id = str(job["id"])
            params = job.get("params") or {}
            settings = " ".join(f"{k}={v}" for k, v in sorted(params.items()) if v is not None)
            console.print(f"submitted job {job_id}: {settings}", soft_wrap=True, highlight=False)
            try:
                job = follow_job(trainer, job, console)
            except KeyboardInterrupt:
                with contextlib.suppress(CliError):
                    trainer.cancel_job(job_id)
                raise
            if job.get("state") != "SUCCEEDED":
                raise DemoFailed(f"job {job_id} ended {job.get('state')}: {job.get('error')}")
            version = int(job["model_version"])
            console.print(f"job {job_id} published model version {version}")

            wait_until_served(predictor_target, version, SERVE_TIMEOUT)
            console.print(f"the predictor serves version {version}")
            with PredictorClient(predictor_target) as predictor:
                result = predictor.predict(DEMO_XS, version=version)
            console.print(predictions_table(result))
            console.print(
                metrics_table(job.get("metrics") or {}, title=f"metrics of version {version}")
            )

            for name in PLOTS:
                (plots / name).write_bytes(trainer.get_plot(job_id, name))
            console.print(f"plots: {shown(plots / PLOTS[0])} and {shown(plots / PLOTS[1])}")
    return 0


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; one clear line and a non-zero exit when anything goes wrong."""
    args = parse_args(argv, os.environ)
    console = Console() if sys.stdout.isatty() else Console(width=120)
    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return run_demo(args, console)
    except (KeyboardInterrupt, Terminated):
        console.print("demo: interrupted; the services are stopped")
        return 130
    except DemoFailed as exc:
        sys.stderr.write(f"demo: failed: {exc}\n")
        return 1
    except CliError as exc:
        sys.stderr.write(f"demo: failed: {exc.message}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
