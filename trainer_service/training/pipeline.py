"""One training job from data to published version (runs in the job's child process)."""

from __future__ import annotations

import logging
import math
import platform
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from squarenet.store import ModelStore
from trainer_service.params import TrainingParams
from trainer_service.rollouts.gate import write_measurement
from trainer_service.training.checkpoint import Checkpoint, TrainingState
from trainer_service.training.data import make_data
from trainer_service.training.evaluate import model_metrics
from trainer_service.training.export import export_model, load_saved_model
from trainer_service.training.fit import fit, use_one_intra_op_thread
from trainer_service.training.fit_curve import FIT_DATA, fit_curve, write_fit_curve
from trainer_service.training.model import build_model
from trainer_service.training.plots import FIT_PLOT, LOSS_PLOT, plot_fit, plot_loss
from trainer_service.training.reports import (
    EpochReport,
    TrainingCancelled,
    TrainingDiverged,
    TrainingOutcome,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RandomStreams:
    """Independent generators, so data, weights, batch order and plots never shift each other.

    One seed pins all four; the benchmark draws the same rows as a job from the same seed.
    """

    data: np.random.Generator
    init: np.random.Generator
    order: np.random.Generator
    plots: np.random.Generator

    @classmethod
    def from_seed(cls, seed: int) -> RandomStreams:
        """The four streams a job with this seed uses."""
        return cls(*map(np.random.default_rng, np.random.SeedSequence(seed).spawn(4)))


def run_training(
    params: TrainingParams,
    store: ModelStore,
    *,
    job_id: str,
    artifacts_dir: Path,
    on_epoch: Callable[[EpochReport], None] = lambda report: None,
    should_stop: Callable[[], bool] = lambda: False,
    staging: Path | None = None,
    before_publish: Callable[[], None] = lambda: None,
    checkpoint: Checkpoint | None = None,
    resume: TrainingState | None = None,
) -> TrainingOutcome:
    """See ``trainer_service.training.train_and_publish``."""
    tf_log = logging.getLogger("tensorflow")
    if tf_log.level == logging.NOTSET:  # its INFO lines ("Assets written to") are not job events
        tf_log.setLevel(logging.WARNING)
    single_threaded = use_one_intra_op_thread()
    if resume is not None:  # the data and first weights again, from the seed it saved
        seed = resume.seed
    else:
        seed = params.seed if params.seed is not None else secrets.randbits(32)
    streams = RandomStreams.from_seed(seed)
    started = "started" if resume is None else f"resumed after epoch {resume.epoch} (checkpoint)"
    described = " ".join(f"{name}={value}" for name, value in params.model_dump().items())
    threads = ", one intra-op thread" if single_threaded else ""
    log.info("job %s: training %s (seed %d, %s%s)", job_id, started, seed, described, threads)
    clock = _Phases()
    data = make_data(params, streams.data)
    model = build_model(params, streams.init)
    clock.lap("prepare")
    result = fit(model, data, params, streams.order, on_epoch=on_epoch, should_stop=should_stop,
                 checkpoint=checkpoint, resume=resume, seed=seed)  # fmt: skip
    epochs, last = len(result.history), result.history[-1].loss
    log.info(
        "job %s: %d epochs trained in %.2f s, last loss %.6g", job_id, epochs, result.seconds, last
    )
    clock.lap("train")
    staging = staging or store.staging_dir(params.model_name, tag=job_id)
    try:
        export_model(model, staging)
        export_seconds = clock.lap("export")
        predict = load_saved_model(staging)
        metrics = model_metrics(predict, data, params.domain)
        broken = sorted(name for name, value in metrics.items() if not math.isfinite(value))
        if broken:  # not worth publishing (and JSON cannot hold inf either)
            raise TrainingDiverged(f"the trained model's {', '.join(broken)} is not finite")
        write_measurement(staging, params.domain, params.num_neurons, predict)
        clock.lap("measure")
        artifacts_dir.mkdir(parents=True, exist_ok=True)
        plot_loss(result.history, artifacts_dir / LOSS_PLOT)
        plot_fit(predict, data, params.domain, artifacts_dir / FIT_PLOT, streams.plots)
        curve = fit_curve(predict, data, params.domain, streams.plots)
        write_fit_curve(curve, artifacts_dir / FIT_DATA)
        clock.lap("plots")
        metadata = {  # the store adds format, version and file hashes
            "created_at": datetime.now(UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "job_id": job_id,
            "params": params.model_dump(mode="json"),
            "domain": list(params.domain),
            "metrics": metrics,
            "timings": {
                "train_seconds": result.seconds,
                "train_cpu_seconds": result.cpu_seconds,
                "export_seconds": export_seconds,
                "phases": clock.laps,
            },
            "training": {
                "seed": seed,
                "epochs_run": len(result.history),
                "stopped_early": result.stopped_early,
                "best_epoch": result.best_epoch,
                "gradient_steps": result.gradient_steps,
            },
            "framework": {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "python": platform.python_version(),
            },
        }
        if should_stop():  # a cancel that arrived while exporting still wins
            raise TrainingCancelled(f"job {job_id} cancelled before publishing")
        before_publish()
        version = store.publish_version(staging, metadata, params.model_name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info(
        "job %s: published %s version %d (mse_in_domain %.6g, mse_out_of_domain %.6g)",
        job_id,
        version.model_name,
        version.version,
        metrics["mse_in_domain"],
        metrics["mse_out_of_domain"],
    )
    return TrainingOutcome(version, {**metrics, "train_seconds": result.seconds})


class _Phases:
    """Seconds spent in each phase of a job, for metadata.json and the benchmarks."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.mark = time.perf_counter()

    def lap(self, name: str) -> float:
        """Close the phase ``name`` now; its seconds."""
        now = time.perf_counter()
        self.laps[name] = round(now - self.mark, 4)
        self.mark = now
        return self.laps[name]
