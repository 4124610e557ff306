"""``squarenet-predictor``: flags (each also a SQUARENET_* variable) into settings, then serve."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from predictor_service.logs import configure_logging
from predictor_service.server import serve
from predictor_service.settings import PredictorSettings
from predictor_service.supervisor import run_workers

_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--model-store", "DIR", str, "root of the model store (read-only is fine)"),
    ("--host", "H", str, "address to bind (default 0.0.0.0)"),
    ("--port", "PORT", int, "gRPC port (default 50051)"),
    ("--metrics-port", "PORT", int, "Prometheus port, 0 for none (default 9102)"),
    ("--model-name", "NAME", str, "model to serve (default square)"),
    (
        "--runtime",
        "{litert,tensorflow}",
        str,
        "model.tflite under LiteRT (default) or the SavedModel under TensorFlow",
    ),
    ("--versions", "N", int, "newest good versions kept loaded for pinning (default 1)"),
    ("--max-batch", "N", int, "most values per Predict call (default 100000)"),
    ("--poll-interval", "S", float, "seconds between looks at the store (default 0.5)"),
    ("--grace-period", "S", float, "seconds calls in flight get after SIGTERM (default 10)"),
    ("--workers", "N", int, "server processes sharing the port via SO_REUSEPORT (default 1)"),
    ("--threads", "N", int, "threads per process for calls and watch streams (default 32)"),
    (
        "--serve-label",
        "LABEL",
        str,
        "serve this version label's version by default (default: the newest version)",
    ),
    (
        "--max-connection-age",
        "S",
        float,
        "seconds before clients are asked to reconnect (default 0: never)",
    ),
)


def parse_settings(argv: Sequence[str] | None = None) -> PredictorSettings:
    """Flags override SQUARENET_* variables, which override defaults; exit 2 when invalid."""
    parser = argparse.ArgumentParser(
        prog="squarenet-predictor",
        description="Serve the newest squarenet models of a model store over gRPC.",
        epilog="Every flag can also be set as SQUARENET_<FLAG> (e.g. SQUARENET_MODEL_STORE).",
    )
    for flag, metavar, kind, help_text in _FLAGS:
        parser.add_argument(flag, metavar=metavar, type=kind, help=help_text)
    args = parser.parse_args(argv)
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    try:
        return PredictorSettings(**given)
    except ValidationError as exc:
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"])
            flag = "--" + name.replace("_", "-")
            parser.error(f"{flag} (SQUARENET_{name.upper()}): {error['msg']}")
        raise  # pragma: no cover (parser.error exits)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    settings = parse_settings(argv)
    if settings.workers > 1:
        return run_workers(settings)
    configure_logging()
    return serve(settings)


if __name__ == "__main__":
    sys.exit(main())
