"""Promote a sweep's best trial into the served model, and delete a finished sweep.

Promotion copies the trial's version folder (``sweep-<id>/<v>``) into a staging folder of
the base model and publishes it like any version: atomically, under the next free number,
with every file's sha256 recomputed. Its metadata is the trial's plus ``sweep`` (id, trial,
job, source version), so a reader can tell a promoted version from a trained one. Deleting
a sweep removes its record and its own model folder; promoted versions live under the base
model and are never touched.
"""

from __future__ import annotations

import logging
import shutil

from squarenet.store import METADATA_FILE, BrokenVersion
from trainer_service.runner.book import JobBook
from trainer_service.runner.records import utc_now
from trainer_service.sweeps.errors import NothingToPromote, SweepNotFinished
from trainer_service.sweeps.records import Promotion, SweepFiles
from trainer_service.sweeps.results import best_trial, live_trials

_log = logging.getLogger("squarenet.trainer.sweeps")


def promote_best(files: SweepFiles, book: JobBook, sweep_id: str) -> Promotion:
    """Publish the best trial's model as a new version of ``base.model_name``."""
    store = files.store
    record = files.existing(sweep_id)
    best = best_trial(record, live_trials(record, book))
    if best is None or best.model_version is None or best.job_id is None:
        raise NothingToPromote(f"sweep {sweep_id} has no succeeded trial to promote")
    try:
        source = store.verify_version(record.model_name, best.model_version)
    except BrokenVersion as exc:
        raise NothingToPromote(f"the best trial's model cannot be promoted: {exc.reason}") from exc
    target = record.spec.promote_to
    staging = store.staging_dir(target, tag=f"promote-{sweep_id}")
    try:
        shutil.copytree(source.path, staging, dirs_exist_ok=True)
        (staging / METADATA_FILE).unlink()  # publish_version writes it anew
        metadata = {
            key: value
            for key, value in source.metadata.items()
            if key not in ("files", "version", "model_name", "format")
        }
        metadata["sweep"] = {"id": sweep_id, "trial": best.number, "job_id": best.job_id,
                             "model_name": source.model_name, "version": source.version}  # fmt: skip
        metadata["promoted_at"] = utc_now()
        published = store.publish_version(staging, metadata, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone after a publish: its rename moved it
    promotion = Promotion(trial=best.number, job_id=best.job_id, model_name=target,
                          version=published.version, promoted_at=utc_now())  # fmt: skip
    with files.lock():  # two promotions at once keep both entries (on one machine)
        files.add_promotion(sweep_id, promotion)
    _log.info("sweep %s trial %d promoted: %s version %d", sweep_id, best.number, target,
              published.version)  # fmt: skip
    return promotion


def delete_sweep(files: SweepFiles, sweep_id: str) -> None:
    """Remove a finished sweep's record, its folder and its trials' model (never a promotion)."""
    with files.lock():
        record = files.existing(sweep_id)
        if not record.settled:
            raise SweepNotFinished(
                f"sweep {sweep_id} is {record.state}: cancel it and wait for its trials to end"
            )
        files.remove(sweep_id)
    shutil.rmtree(files.store.model_dir(record.model_name), ignore_errors=True)
    _log.info("sweep %s deleted with its model %s", sweep_id, record.model_name)
