"""Service lifecycle: train → served latency (goal 5) and the trainer's cold start (goal 6).

Both measure the real console scripts, ``squarenet-trainer`` and ``squarenet-predictor``,
as separate processes on a temp model store, the way a user runs them.

**train-to-served** submits small jobs one after another over REST and, for each, measures
from the moment the job became SUCCEEDED (its record's ``finished_at``; the SSE ``state``
event reaches the client up to one event-poll later) to the WatchModel message announcing
its version and to the first Predict answering with it. The predictor finds new versions
by polling the store every ``--poll-interval`` seconds (the trainer does not notify it), so
the figure is bounded by that interval: it is the baseline of the ratio.

**trainer-start** times ``squarenet-trainer`` from process start to ``/readyz`` 200,
alternating with a bare gunicorn serving a hello Flask app with the same worker count
(the framework's floor); ``python -c "import flask, gunicorn"`` is shown for context.

    python bench/lifecycle.py                     # both
    python bench/lifecycle.py train-to-served     # 10 publishes
    python bench/lifecycle.py trainer-start       # 5 starts each
    python bench/lifecycle.py --quick --json ...  # fewer rounds; JSON lines on stdout

Figures are ratios within this run; nothing here fails on a wall-clock number.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import grpc
import httpx
from httpx_sse import connect_sse
from rich.console import Console
from rich.table import Table

from predictor_service.settings import PredictorSettings
from squarenet.stack import StackError, free_port, local_stack, start_trainer, trainer_ready
from squarenet.store import DEFAULT_MODEL_NAME
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

SERVED_GOAL = 1.0
"""Seconds from SUCCEEDED to the predictor answering with the new version (p50)."""
TRAINER_START_GOAL = 5.0
"""Seconds from starting squarenet-trainer to /readyz 200 (p50)."""
JOB_PARAMS: dict[str, Any] = {"n_samples": 400, "epochs": 5, "batch_size": 100}
"""A job small enough to train in about a second (most of a job is TensorFlow's import)."""
PROBE_EVERY = 0.01
"""Seconds between the Predict calls that catch the first answer from a new version."""
MEASUREMENTS = ("train-to-served", "trainer-start")


# --- processes ------------------------------------------------------------------------------


def stop(process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it does not end in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200 right now."""
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 60) -> float:
    """Seconds until ``url`` answers 200, polled every 10 ms; raise if the process dies."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if http_ok(url):
            return time.perf_counter() - started
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        time.sleep(0.01)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (``share`` in 0..1) of a non-empty list."""
    ordered = sorted(values)
    return ordered[min(len(ordered), max(1, math.ceil(share * len(ordered)))) - 1]


def emit(enabled: bool, **figure: Any) -> None:
    """One machine-readable line per figure (for bench/run_all.py)."""
    if enabled:
        print(json.dumps({"bench": "lifecycle", **figure}), flush=True)


def parse_time(text: str) -> float:
    """An RFC 3339 time of the job record (``...Z``) as a Unix timestamp."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# --- train → served -------------------------------------------------------------------------


@dataclass
class Sightings:
    """When (Unix time) each version was first announced by WatchModel and first served."""

    watched: dict[int, float] = field(default_factory=dict)
    predicted: dict[int, float] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def note(self, kind: dict[int, float], version: int) -> None:
        """Record the first sighting of ``version`` and wake the waiting job loop."""
        with self.changed:
            kind.setdefault(version, time.time())
            self.changed.notify_all()

    def wait_both(self, version: int, timeout: float) -> tuple[float, float]:
        """Both sightings of ``version``; raise when they do not come in time."""
        with self.changed:
            if not self.changed.wait_for(
                lambda: version in self.watched and version in self.predicted, timeout
            ):
                raise RuntimeError(f"version {version} not served within {timeout} s")
            return self.watched[version], self.predicted[version]


def watch_versions(channel: grpc.Channel, sightings: Sightings, done: threading.Event) -> None:
    """Follow WatchModel until ``done``; note each announced version."""
    stub = predictor_pb2_grpc.PredictorStub(channel)  # type: ignore[no-untyped-call]
    while not done.is_set():
        stream = stub.WatchModel(predictor_pb2.WatchModelRequest())
        try:
            for model in stream:
                sightings.note(sightings.watched, int(model.version))
                if done.is_set():
                    stream.cancel()
        except grpc.RpcError:
            time.sleep(0.05)  # cancelled at the end, or the predictor not up yet


def probe_predictions(channel: grpc.Channel, sightings: Sightings, done: threading.Event) -> None:
    """Call Predict (newest version) every PROBE_EVERY s; note the first answer per version."""
    stub = predictor_pb2_grpc.PredictorStub(channel)  # type: ignore[no-untyped-call]
    request = predictor_pb2.PredictRequest(x=[1.0])
    while not done.wait(PROBE_EVERY):
        try:
            reply = stub.Predict(request, timeout=2)
        except grpc.RpcError:
            continue  # UNAVAILABLE until the first model is loaded
        sightings.note(sightings.predicted, int(reply.version))


@dataclass(frozen=True)
class Publish:
    """One job's path from SUCCEEDED to served, in seconds (negative: served before)."""

    version: int
    to_watch: float
    to_predict: float
    sse_to_watch: float
    publish_to_watch: float


def run_job(http: httpx.Client, seed: int, sightings: Sightings, store: Path) -> Publish:
    """Submit one job, follow its events to SUCCEEDED, wait until it is served."""
    created = http.post("/v1/jobs", json={**JOB_PARAMS, "seed": seed})
    created.raise_for_status()
    job_id = created.json()["id"]
    final: dict[str, Any] | None = None
    with connect_sse(http, "GET", f"/v1/jobs/{job_id}/events", timeout=120) as source:
        for event in source.iter_sse():
            if event.event == "state":
                final, seen_at = json.loads(event.data), time.time()
                break
    if final is None or final.get("state") != "SUCCEEDED":
        raise RuntimeError(f"job {job_id} ended {final and final.get('state')}: {final}")
    version = int(final["model_version"])
    watched, predicted = sightings.wait_both(version, timeout=60)
    succeeded = parse_time(final["finished_at"])
    metadata = json.loads((store / DEFAULT_MODEL_NAME / str(version) / "metadata.json").read_text())
    return Publish(
        version,
        watched - succeeded,
        predicted - succeeded,
        watched - seen_at,
        watched - parse_time(metadata["created_at"]),
    )


def train_to_served(args: argparse.Namespace, console: Console) -> None:
    """Both services on one temp store; ``--jobs`` publishes timed end to end."""
    jobs = 3 if args.quick else args.jobs
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="squarenet-bench-")))
        store = root / "store"
        store.mkdir()
        # the interval the predictor will use: its default, or SQUARENET_POLL_INTERVAL
        poll = PredictorSettings(model_store=store).poll_interval
        try:
            services = stack.enter_context(local_stack(store, root / "logs"))
        except StackError as exc:
            console.print(str(exc))
            raise
        base = services.trainer_url
        channel = stack.enter_context(grpc.insecure_channel(services.predictor_target))
        sightings, done = Sightings(), threading.Event()
        threads = [
            threading.Thread(target=watch_versions, args=(channel, sightings, done), daemon=True),
            threading.Thread(
                target=probe_predictions, args=(channel, sightings, done), daemon=True
            ),
        ]
        for thread in threads:
            thread.start()
        stack.callback(done.set)
        http = stack.enter_context(httpx.Client(base_url=base, timeout=30))
        console.print(
            f"train → served: {jobs} jobs {JOB_PARAMS}, one after another; the predictor "
            f"polls the store every {poll} s (its --poll-interval)"
        )
        publishes = [run_job(http, seed, sightings, store) for seed in range(jobs)]
    report_served(args, console, publishes, poll)


def report_served(
    args: argparse.Namespace, console: Console, publishes: list[Publish], poll: float
) -> None:
    """The per-publish table, the distribution and its verdict, JSON lines."""
    table = Table(
        "version",
        "SUCCEEDED → WatchModel s",
        "SUCCEEDED → first Predict s",
        "SSE state seen → WatchModel s",
        "published → WatchModel s",
        title="Train → served (negative: served before the trainer recorded SUCCEEDED)",
    )
    for row in publishes:
        table.add_row(
            str(row.version),
            f"{row.to_watch:+.3f}",
            f"{row.to_predict:+.3f}",
            f"{row.sse_to_watch:+.3f}",
            f"{row.publish_to_watch:+.3f}",
        )
    console.print(table)
    series = {
        "served_watch_seconds": [row.to_watch for row in publishes],
        "served_predict_seconds": [row.to_predict for row in publishes],
        "published_watch_seconds": [row.publish_to_watch for row in publishes],
    }
    for figure, values in series.items():
        p50, p90, worst = statistics.median(values), percentile(values, 0.9), max(values)
        met = p50 <= SERVED_GOAL if figure != "published_watch_seconds" else None
        console.print(
            f"{figure}: p50 {p50:.3f} s, p90 {p90:.3f} s, max {worst:.3f} s over "
            f"{len(values)} publishes; poll interval {poll} s, ratio p50/poll {p50 / poll:.2f}"
            + (
                ""
                if met is None
                else f"; goal p50 ≤ {SERVED_GOAL} s: {'met' if met else 'NOT met'}"
            )
        )
        emit(
            args.json,
            figure=figure,
            value=p50,
            p90=p90,
            max=worst,
            values=values,
            baseline=poll,
            ratio=p50 / poll,
            goal=f"p50 <= {SERVED_GOAL} s" if met is not None else "report",
            met=met,
        )
    console.print(
        "How the predictor finds new versions: it polls the store (the trainer does not "
        "notify it); a version becomes visible within one poll interval of its publish, "
        "then is loaded and warmed before it is swapped in."
    )


# --- trainer start --------------------------------------------------------------------------

HELLO_APP = '''\
"""A hello Flask app: what gunicorn + Flask cost to start, with nothing of squarenet."""
from flask import Flask

app = Flask(__name__)


@app.get("/readyz")
def readyz() -> dict[str, str]:
    return {"status": "ok"}
'''


def time_trainer_start(store: Path, log_path: Path) -> float:
    """Seconds from starting squarenet-trainer to ``/readyz`` 200 (looked at every 10 ms)."""
    started = time.perf_counter()
    trainer = start_trainer(store, log_path)
    try:
        trainer.wait_until(
            lambda: trainer_ready(trainer.base_url), "the trainer to be ready", 60, every=0.01
        )
        return time.perf_counter() - started
    finally:
        trainer.stop()


def time_hello_start(root: Path, log: IO[bytes]) -> float:
    """Seconds from starting the hello app under gunicorn to ``/readyz`` 200."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--chdir", str(root),
               "--bind", f"127.0.0.1:{port}", "--workers", "2", "hello_app:app"]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", process)
        return time.perf_counter() - started
    finally:
        stop(process)


def time_import() -> float:
    """Seconds for a Python process that only imports Flask and gunicorn."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import flask, gunicorn"], check=True)
    return time.perf_counter() - started


def trainer_start(args: argparse.Namespace, console: Console) -> None:
    """Alternate trainer and hello-app starts (noise hits both alike); report the medians."""
    starts = 3 if args.quick else args.starts
    trainer_s: list[float] = []
    hello_s: list[float] = []
    with tempfile.TemporaryDirectory(prefix="squarenet-bench-") as folder:
        root = Path(folder)
        (root / "hello_app.py").write_text(HELLO_APP)
        store = root / "store"
        store.mkdir()
        with (root / "services.log").open("wb") as log:
            for round_ in range(starts):
                trainer_first = round_ % 2 == 0
                for is_trainer in (trainer_first, not trainer_first):
                    if is_trainer:
                        trainer_s.append(time_trainer_start(store, root / "trainer.log"))
                    else:
                        hello_s.append(time_hello_start(root, log))
        imports = [time_import() for _ in range(starts)]
    trainer_p50, hello_p50 = statistics.median(trainer_s), statistics.median(hello_s)
    import_p50 = statistics.median(imports)
    table = Table("process start → ready", "p50 s", "each s", title="Trainer cold start")
    for name, values in (
        ("squarenet-trainer → /readyz 200", trainer_s),
        ("gunicorn + hello Flask app (2 workers) → 200", hello_s),
        ('python -c "import flask, gunicorn"', imports),
    ):
        each = ", ".join(f"{value:.2f}" for value in values)
        table.add_row(name, f"{statistics.median(values):.2f}", each)
    console.print(table)
    met = trainer_p50 <= TRAINER_START_GOAL
    console.print(
        f"trainer start p50 {trainer_p50:.2f} s = {trainer_p50 / hello_p50:.2f}x the hello "
        f"app's {hello_p50:.2f} s; goal ≤ {TRAINER_START_GOAL} s: {'met' if met else 'NOT met'}"
    )
    emit(
        args.json,
        figure="trainer_start_seconds",
        value=trainer_p50,
        values=trainer_s,
        baseline=hello_p50,
        baseline_values=hello_s,
        import_seconds=import_p50,
        ratio=trainer_p50 / hello_p50,
        goal=f"p50 <= {TRAINER_START_GOAL} s",
        met=met,
    )


def main(argv: list[str] | None = None) -> int:
    """Parse flags, run the chosen measurements, print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "which",
        nargs="*",
        metavar="{train-to-served,trainer-start}",
        help="what to measure (default both)",
    )
    parser.add_argument("--jobs", type=int, default=10, help="publishes to time")
    parser.add_argument("--starts", type=int, default=5, help="process starts of each kind")
    parser.add_argument("--quick", action="store_true", help="3 publishes, 3 starts")
    parser.add_argument(
        "--json", action="store_true", help="JSON lines on stdout, tables on stderr"
    )
    args = parser.parse_args(argv)
    unknown = set(args.which) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement {sorted(unknown)}; choose from {MEASUREMENTS}")
    args.which = args.which or list(MEASUREMENTS)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    console = Console(stderr=args.json, width=120)
    if "train-to-served" in args.which:
        train_to_served(args, console)
    if "trainer-start" in args.which:
        trainer_start(args, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
