"""What the trainer's reads cost once the store has grown, against the full read they replace.

Builds a store in a temp folder and answers from the real app (Flask's test client, one
process, no network), each figure against a baseline measured in the same run:

* **sweep pass**: one controller pass over 1,000 settled sweeps (20 trials each) and one
  running, against parsing every sweep record once (what a pass did before it kept
  the settled ones it had seen). Goal: under 50 ms.
* **GET /v1/models**: the listing of 10,000 unchanged versions, against the first listing
  (which hashes every file). Goal: under 50 ms.
* **fits.png**: the figure of a 1,000-trial sweep, against the same figure of 12 trials
  (it shows the best 12 either way). Goal: 200, at most 1.5x.
* **event poll**: one poll of a job's event stream on a 10,000-epoch progress file that
  grew by one line, against reading the whole file (what each poll did before).

    python bench/grown_store.py [--quick] [--json]   # --quick: a tenth of the sizes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from flask.testing import FlaskClient
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as PlotFigure
from rich.console import Console
from serving import Figure, render

from squarenet.store import METADATA_FILE, SAVED_MODEL_FILE, TFLITE_FILE
from trainer_service.api.app import create_app
from trainer_service.lifecycle import RunState, TrialState
from trainer_service.runner.executor import Executor
from trainer_service.runner.records import ProgressTail
from trainer_service.settings import Settings
from trainer_service.sweeps import reconcile_sweeps
from trainer_service.sweeps.records import (
    SweepFiles,
    SweepRecord,
    Trial,
    new_sweep_id,
)
from trainer_service.sweeps.spec import SweepSpec, plan_sweep

GOAL_SECONDS = 0.050
SPEC = {
    "base": {"n_samples": 200, "epochs": 2, "batch_size": 20, "seed": 1},
    "parameters": [{"name": "num_neurons", "parameterType": "int",
                    "feasibleSpace": {"min": 1, "max": 64}}],
    "algorithm": {"algorithmName": "random"},
    "maxTrialCount": 1000,
}  # fmt: skip
VERSION_FILES = {
    SAVED_MODEL_FILE: b"saved model placeholder",
    TFLITE_FILE: b"tflite placeholder",
    "variables/variables.index": b"index",
    "variables/variables.data-00000-of-00001": b"data",
    "gate.json": json.dumps({"format": 1, "mse_in_domain": 0.004}).encode(),
}


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``action`` over ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def settled_record(spec: SweepSpec, trials: int, number: int) -> SweepRecord:
    """A finished sweep as the controller leaves it: every trial SUCCEEDED."""
    sweep_id = f"{new_sweep_id()[:16]}{number:08x}"
    done = [
        Trial(number=n, assignments={"num_neurons": 1 + n % 64}, state=TrialState.SUCCEEDED,
              job_id=f"job-{n}", submitted=True, metrics={"mse_in_domain": 0.01 + n / 1000},
              model_version=n + 1, started_at="2026-12-01T00:00:00Z",
              finished_at="2026-12-01T00:00:01Z")
        for n in range(trials)
    ]  # fmt: skip
    return SweepRecord(id=sweep_id, state=RunState.SUCCEEDED, spec=spec, trials=done,
                       created_at="2026-12-01T00:00:00Z", finished_at="2026-12-01T00:00:02Z")  # fmt: skip


def sweep_pass(executor: Executor, sweeps: int, repeats: int) -> Figure:
    """A controller pass over ``sweeps`` settled sweeps and one running one."""
    files = SweepFiles(executor.book.store)
    spec = plan_sweep(SweepSpec.model_validate(SPEC), "sweep-bench")
    for number in range(sweeps):
        files.write(settled_record(spec, 20, number))
    running = settled_record(spec, 20, sweeps).model_copy(update={"state": RunState.RUNNING})
    files.write(running)
    baseline = median_seconds(files.records, repeats)
    reconcile_sweeps(executor)  # this process meets each settled record once
    value = median_seconds(lambda: reconcile_sweeps(executor), repeats)
    return Figure(f"sweep pass, {sweeps:,} settled sweeps and 1 running", value * 1000, "ms",
                  baseline * 1000, "every record parsed once", "< 50 ms",
                  value < GOAL_SECONDS)  # fmt: skip


def publish_versions(root: Path, count: int) -> None:
    """``count`` sealed versions written in place (as published, without the fsyncs)."""
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in VERSION_FILES.items()}
    for version in range(1, count + 1):
        folder = root / "square" / str(version)
        (folder / "variables").mkdir(parents=True)
        for name, data in VERSION_FILES.items():
            (folder / name).write_bytes(data)
        metadata = {"format": 1, "model_name": "square", "version": version,
                    "domain": [-5.0, 5.0], "files": sums, "metrics": {"mse_in_domain": 0.004}}  # fmt: skip
        (folder / METADATA_FILE).write_text(json.dumps(metadata))


def models_listing(client: FlaskClient, root: Path, count: int, repeats: int) -> Figure:
    """GET /v1/models of ``count`` unchanged versions, against the first (hashing) one."""
    publish_versions(root, count)

    def listing() -> None:
        response = client.get("/v1/models")
        assert response.status_code == 200 and len(response.get_json()["models"]) == count

    baseline = median_seconds(listing, 1)
    value = median_seconds(listing, repeats)
    return Figure(f"GET /v1/models, {count:,} unchanged versions", value * 1000, "ms",
                  baseline * 1000, "first listing: every file hashed", "< 50 ms",
                  value < GOAL_SECONDS)  # fmt: skip


def fit_png(path: Path) -> None:
    """A fit figure of the size a job draws."""
    figure = PlotFigure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    figure.add_subplot().plot(
        [x / 10 for x in range(-100, 101)], [(x / 10) ** 2 for x in range(-100, 101)]
    )
    figure.savefig(path, dpi=100)


def fits_figure(client: FlaskClient, executor: Executor, trials: int) -> Figure:
    """fits.png of a ``trials``-trial sweep against the same figure of 12 trials."""
    files = SweepFiles(executor.book.store)
    spec = plan_sweep(SweepSpec.model_validate(SPEC), "sweep-bench")
    png = files.root / "fit.png"
    files.root.mkdir(parents=True, exist_ok=True)
    fit_png(png)
    seconds: dict[int, float] = {}
    for count in (12, trials):
        record = settled_record(spec, count, 10**6 + count)
        files.write(record)
        for trial in record.trials:
            folder = files.trial_dir(record.id, trial.number)
            folder.mkdir(parents=True)
            (folder / "fit.png").write_bytes(png.read_bytes())
        started = time.perf_counter()
        response = client.get(f"/v1/sweeps/{record.id}/plots/fits.png")
        seconds[count] = time.perf_counter() - started
        if response.status_code != 200:
            raise SystemExit(f"fits.png of {count} trials answered {response.status_code}")
    value, baseline = seconds[trials], seconds[12]
    return Figure(f"fits.png, {trials:,}-trial sweep (200, a PNG)", value, "s", baseline,
                  "12-trial sweep", "<= 1.5x", value <= 1.5 * baseline)  # fmt: skip


def event_poll(root: Path, epochs: int, repeats: int) -> Figure:
    """One poll of a growing progress file against reading all of it."""
    path = root / "progress.jsonl"
    row = {"epoch": 0, "epochs": epochs, "loss": 0.5, "val_loss": 0.6, "seconds": 0.01}
    path.write_text("".join(json.dumps({**row, "epoch": n}) + "\n" for n in range(1, epochs + 1)))
    tail = ProgressTail(path)
    tail.read()
    grown = [epochs]

    def poll() -> None:
        grown[0] += 1
        with path.open("a") as handle:
            handle.write(json.dumps({**row, "epoch": grown[0]}) + "\n")
        assert len(tail.read().epochs) == 1

    def full_read() -> None:
        lines = path.read_text().splitlines()
        assert len([json.loads(line) for line in lines]) >= epochs

    baseline = median_seconds(full_read, repeats)
    value = median_seconds(poll, repeats)
    return Figure(f"event stream poll, {epochs:,}-epoch progress file, one new line",
                  value * 1000, "ms", baseline * 1000, "whole file read and parsed",
                  "report")  # fmt: skip


def measure(quick: bool) -> list[Figure]:
    """Every figure, each on its own store."""
    scale = 10 if quick else 1
    figures = []
    with tempfile.TemporaryDirectory(prefix="squarenet-bench-grown-") as folder:
        for name in ("sweeps", "models", "fits"):
            settings = Settings.model_validate({"model_store": Path(folder, name)})
            app = create_app(settings)
            executor: Executor = app.extensions["squarenet"].executor
            client = app.test_client()
            if name == "sweeps":
                figures.append(sweep_pass(executor, 1000 // scale, repeats=9))
            elif name == "models":
                figures.append(models_listing(client, Path(folder, name), 10_000 // scale, 9))
            else:
                figures.append(fits_figure(client, executor, 1000 // scale))
        figures.append(event_poll(Path(folder), 10_000 // scale, repeats=51))
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    args = parser.parse_args(argv)
    console = Console(width=150)
    render(measure(args.quick), console, args.json, bench="grown")
    return 0


if __name__ == "__main__":
    sys.exit(main())
