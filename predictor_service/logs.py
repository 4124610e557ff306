"""Logging of the predictor: one line per event on stdout, with the process id."""

from __future__ import annotations

import logging
import sys


def configure_logging() -> None:
    """One line per event on stdout, with the process id (several workers share a log)."""
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s predictor[%(process)d] %(message)s",
        force=True,
    )
