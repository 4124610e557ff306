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
import signal
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console

from squarenet.cli.errors import CliError
from squarenet.cli.hyperparameters import HYPERPARAMETERS, add_hyperparameter_flags, job_body
from squarenet.cli.predictor_client import PredictorClient
from squarenet.cli.progress import follow_job
from squarenet.cli.render import metrics_table, predictions_table
from squarenet.cli.trainer_client import TrainerClient
from squarenet.stack import LocalStack, StackError, local_stack

DEMO_XS = (-10.0, -7.5, -5.0, -2.5, 0.0, 2.5, 5.0, 7.5, 10.0)
PLOTS = ("loss.png", "fit.png")
START_TIMEOUT = 120.0  # TensorFlow's import alone takes seconds on a busy 2-core machine
SERVE_TIMEOUT = 60.0


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


# --- the services (started, waited for and stopped by squarenet.stack) -------------------


def shown(path: Path) -> str:
    """A path as the user typed it: relative to the working folder when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def port_is_free(port: int) -> bool:
    """Whether nothing listens on the port, on any interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - probing every interface
        except OSError:
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

    console.print(f"model store {shown(store)}")
    try:
        with local_stack(
            store, logs,
            trainer_port=args.trainer_port, predictor_port=args.predictor_port,
            metrics_port=args.metrics_port, timeout=START_TIMEOUT,
        ) as services:  # fmt: skip
            for service in (services.trainer, services.predictor):
                console.print(
                    f"started {service.name} (pid {service.pid}, log {shown(service.log_path)})"
                )
            console.print(
                f"trainer ready at {services.trainer_url}, predictor at {services.predictor_target}"
            )
            return follow_and_show(args, services, plots, console)
    except StackError as exc:
        raise DemoFailed(str(exc)) from exc
    finally:
        console.print("stopped squarenet-trainer and squarenet-predictor")


def follow_and_show(
    args: argparse.Namespace, services: LocalStack, plots: Path, console: Console
) -> int:
    """Submit the job, follow it, wait until it is served, print predictions and plots."""
    trainer_url, predictor_target = services.trainer_url, services.predictor_target
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
