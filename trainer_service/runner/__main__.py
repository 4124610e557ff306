"""``python -m trainer_service.runner``: the runner process that ``squarenet-trainer`` starts.

It reads the same ``SQUARENET_*`` settings as the trainer (the launcher passes them in the
environment) and runs the loop of the configured executor until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from pydantic import ValidationError

from trainer_service.runner.executor import run_runner
from trainer_service.settings import Settings


def main() -> int:
    """Run the executor's loop; 2 when the settings are unusable."""
    parser = argparse.ArgumentParser(prog="python -m trainer_service.runner")
    parser.add_argument("--model-store", help="the store (else SQUARENET_MODEL_STORE)")
    store = parser.parse_args().model_store
    if store:
        os.environ["SQUARENET_MODEL_STORE"] = store
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    try:
        settings = Settings()  # model_store comes from the environment
    except ValidationError as exc:
        print(f"trainer_service.runner: bad settings: {exc}", file=sys.stderr)
        return 2
    return run_runner(settings)


if __name__ == "__main__":
    sys.exit(main())
