"""``squarenet-trainer``: the REST API under gunicorn plus this replica's job runner.

Flags and ``SQUARENET_*`` variables are ``Settings`` (the bearer token only a variable, so it
never shows in a process listing), validated before anything starts: a bad value exits 2 with
the setting named. SIGTERM stops the workers (requests in flight get ``--graceful-timeout``),
then the job runner, and exits 0.
"""

from __future__ import annotations

import argparse
import errno
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from pydantic import ValidationError

from trainer_service.api.gunicorn_conf import SHM, gunicorn_options
from trainer_service.settings import Settings, prepare_store

EXIT_BAD_CONFIG = 2
# A store folder we may not write (its owner, its mode, a read-only mount) is fixed by an
# admin while the trainer runs; any other error (the path names a file) is a bad setting.
FIXED_WHILE_RUNNING = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

# Settings that are not flags: the token (environment only, never in a process listing) and
# what the launcher fills in itself.
NOT_FLAGS = frozenset({"api_token", "runner_pid", "max_body_bytes"})


def _flags() -> dict[str, tuple[str, type, str, str]]:
    """flag -> (settings field, type, metavar, help), one per setting: each is also SQUARENET_<FIELD>."""
    flags = {}
    for name, info in Settings.model_fields.items():
        if name not in NOT_FLAGS:
            kind: type = (
                int if info.annotation is int else float if info.annotation is float else str
            )
            metavar = {int: "N", float: "SECONDS"}.get(kind, name.rsplit("_", 1)[-1].upper())
            default = "required" if info.is_required() else f"default {info.default}"
            text = " ".join(f"{info.description} ({default})".split())  # docstrings span lines
            flags["--" + name.replace("_", "-")] = (name, kind, metavar, text)
    return flags


FLAGS = _flags()


class TrainerApplication(BaseApplication):  # type: ignore[misc]  # gunicorn is untyped
    """gunicorn run programmatically: options from Settings, app from ``create_app``."""

    def __init__(self, settings: Settings, options: dict[str, Any], metrics_dir: Path) -> None:
        self.settings = settings
        self.options = options
        self.metrics_dir = metrics_dir
        self.runner: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.runner_failed = False
        super().__init__()

    def load_config(self) -> None:
        """Copy our options into gunicorn's config."""
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Build the Flask app in the worker (after fork, with the runner's pid known); while
        the store is not writable, the gate that waits for it (``api/store_gate.py``)."""
        from trainer_service.api.app import create_app  # noqa: PLC0415 - after PROMETHEUS_MULTIPROC_DIR is set
        from trainer_service.api.store_gate import StoreGate  # noqa: PLC0415 - as above

        gate = StoreGate(self.settings, create_app)
        return gate.app or gate


def parse_args(argv: Sequence[str] | None) -> tuple[dict[str, Any], str]:
    """The flags given on the command line (not their defaults) and the log level."""
    parser = argparse.ArgumentParser(
        prog="squarenet-trainer",
        description="Serve the squarenet trainer REST API (gunicorn) and run its training jobs.",
        epilog="Every flag is also an environment variable: SQUARENET_<FLAG_IN_CAPITALS>, "
        "e.g. SQUARENET_MODEL_STORE. SQUARENET_API_TOKEN (environment only) makes every "
        "POST require 'Authorization: Bearer <token>'.",
    )
    for flag, (field, kind, metavar, text) in FLAGS.items():
        parser.add_argument(flag, dest=field, type=kind, default=None, metavar=metavar, help=text)
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SQUARENET_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help="log level (default INFO; env SQUARENET_LOG_LEVEL)",
    )
    args = vars(parser.parse_args(argv))
    given = {name: value for name, *_ in FLAGS.values() if (value := args[name]) is not None}
    return given, str(args["log_level"])


def load_settings(given: dict[str, Any]) -> Settings:
    """Settings from flags over environment, or exit 2 naming what is wrong.

    A store folder we may not write is not a bad setting (an admin fixes its owner while we
    run): it is said in one line here, and the API and the job runner wait for it."""
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            name = ".".join(str(part) for part in error["loc"]) or "settings"
            flag = f"--{name.replace('_', '-')} / SQUARENET_{name.upper()}"
            print(f"squarenet-trainer: {name} ({flag}): {error['msg']}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_CONFIG) from None
    try:
        prepare_store(settings)
    except OSError as exc:
        said = f"squarenet-trainer: model store {settings.model_store} is not writable: {exc}"
        if exc.errno not in FIXED_WHILE_RUNNING:  # e.g. the path names a file: a bad setting
            print(said, file=sys.stderr)
            raise SystemExit(EXIT_BAD_CONFIG) from None
        # said once; the API answers 503 with it (api/store_gate.py) until it is fixed
        print(f"{said}; waiting for it", file=sys.stderr)
    if settings.executor == "kubernetes":
        from trainer_service.runner.kubernetes import configuration_problem  # noqa: PLC0415

        problem = configuration_problem(settings)
        if problem is not None:
            print(f"squarenet-trainer: --executor kubernetes: {problem}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_CONFIG)
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run until SIGTERM / SIGINT; 0 on a clean stop, 1 if the job runner died, 2 on bad config."""
    given, log_level = parse_args(argv)
    settings = load_settings(given)
    # prometheus-client's multiprocess files (in memory when possible), named before anything
    # imports prometheus_client: it picks its storage at import time
    shm = str(SHM) if SHM.is_dir() and os.access(SHM, os.W_OK) else None
    metrics_dir = Path(tempfile.mkdtemp(prefix="squarenet-trainer-metrics-", dir=shm))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    application = TrainerApplication(settings, gunicorn_options(settings, log_level), metrics_dir)
    try:
        application.run()
    except SystemExit as stopped:  # gunicorn's master ends with sys.exit
        code = stopped.code if isinstance(stopped.code, int) else 1
    else:
        code = 0
    return 1 if application.runner_failed else code


if __name__ == "__main__":
    sys.exit(main())
