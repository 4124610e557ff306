"""``python -m trainer_service.control_loop``: the process ``squarenet-trainer`` starts beside
gunicorn to run jobs and sweeps.

It joins the configured executor's loop (``runner/``: local child processes, or the Kubernetes
Jobs' finalizer) and the sweep controller (``sweeps/``), which releases trials whenever a job
ends and on the executor's tick; it lives above both so that neither imports the other's loop.
It reads the trainer's ``SQUARENET_*`` settings from the environment the launcher passes, waits
for a store it cannot write yet (as the API does), and runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from pydantic import ValidationError

from squarenet.store import ModelStore
from trainer_service.runner.executor import executor_for, make_book
from trainer_service.settings import Settings, store_problem
from trainer_service.sweeps.controller import SweepTicker

STORE_POLL_SECONDS = 2.0

log = logging.getLogger("squarenet.trainer.control_loop")


def wait_for_store(settings: Settings) -> None:
    """Return once the store is writable; until then poll it quietly.

    The launcher has already said what is wrong in one line (``cli.load_settings``); a new
    share is fixed by an admin while we run, so this waits rather than exits (SIGTERM still
    ends the process at once: nothing has started yet)."""
    if store_problem(settings) is None:
        return
    while store_problem(settings) is not None:
        time.sleep(STORE_POLL_SECONDS)
    log.info("model store %s is writable: starting the job runner", settings.model_store)


def run(settings: Settings) -> int:
    """The executor's loop with the sweep controller in it; its exit status."""
    wait_for_store(settings)
    store = ModelStore(settings.model_store)
    book = make_book(settings, store)
    sweeps = SweepTicker(store, executor_for(settings, book))
    book.on_finished.append(sweeps.job_finished)
    if settings.executor == "kubernetes":
        from trainer_service.runner.kubernetes import Finalizer  # noqa: PLC0415

        return Finalizer(book, settings, sweeps=sweeps.tick).run()
    from trainer_service.runner.local import LocalRunner  # noqa: PLC0415

    return LocalRunner(book, settings.max_concurrent_jobs, sweeps=sweeps.tick).run()


def main() -> int:
    """Run the control loop; 2 when the settings are unusable."""
    parser = argparse.ArgumentParser(prog="python -m trainer_service.control_loop")
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
        print(f"trainer_service.control_loop: bad settings: {exc}", file=sys.stderr)
        return 2
    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
