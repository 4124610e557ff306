"""Serving speed: squarenet-predictor against an echo server and a naive Keras server, one run.

Three servers run on this machine in the same run, each a separate process:

* **echo** — a minimal grpcio server with the predictor's settings (sync server, same
  thread pool, same message limits) whose Predict returns the request's bytes untouched (no
  decoding, no encoding, no work): the most a Python grpcio server can do, the ceiling.
* **naive** — the seed's way: Keras ``model.predict`` per request (few requests suffice).
* **squarenet** — ``squarenet-predictor`` on a temp store holding one trained version.

Load comes from separate client processes (asyncio gRPC clients, one connection each) so
the client's own Python time does not share the server's interpreter. Figures are ratios
against the echo server measured minutes apart at most; nothing here fails on a wall-clock
number.

    python bench/serving.py           # the full table (about two minutes)
    python bench/serving.py --quick   # shorter runs, for a smoke test
    python bench/serving.py --json    # also one JSON line per figure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from predictor_service.settings import PredictorSettings
from squarenet.stack import free_port, start_predictor
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
LATENCY_GOAL = 1.1
"""squarenet's one-value p50 at concurrency 1 may be at most this times the echo server's."""
THROUGHPUT_GOAL = 0.9
"""squarenet's one-value calls/s must reach this share of the echo server's."""
PREDICTIONS_GOAL = 1_000_000
"""Predictions per second with 1000-value calls."""
COLD_START_GOAL = 1.0
"""Seconds from process start to health SERVING (p50 over the starts)."""
LOAD_PROCESSES = 2
"""Client processes generating load (each with its own connection)."""


# --- the reference servers ------------------------------------------------------------------


def raw_echo_handler() -> grpc.GenericRpcHandler:
    """Predict answered with the request's own bytes (x's field reads back as y's).

    No (de)serializer: grpcio hands the handler bytes and sends its bytes back, so this is
    what a call costs when decoding, the model and encoding all cost nothing.
    """

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    handlers = {"Predict": grpc.unary_unary_rpc_method_handler(echo)}
    return grpc.method_handlers_generic_handler("squarenet.v1.Predictor", handlers)


class NaiveServicer(predictor_pb2_grpc.PredictorServicer):
    """The seed's way: Keras ``model.predict`` on every request."""

    def __init__(self) -> None:
        import keras
        import numpy as np

        self._np = np
        self._model = keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(10, activation="relu"), keras.layers.Dense(1)]
        )
        self._model.compile("adam", "mse")

    def Predict(  # noqa: N802 (the proto's name)
        self, request: predictor_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predictor_pb2.PredictResponse:
        x = self._np.array(request.x, dtype="float32").reshape(-1, 1)
        y = self._model.predict(x, verbose=0).reshape(-1)
        return predictor_pb2.PredictResponse(
            y=y.tolist(), version=1, extrapolated=[False] * len(request.x)
        )


def run_reference_server(kind: str, port: int) -> None:
    """Serve ``kind`` with the predictor's own grpcio settings until SIGTERM."""
    from predictor_service.server import server_options

    settings = PredictorSettings.model_validate({"model_store": ".", "port": port})
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads),
        options=server_options(settings),
    )
    if kind == "echo":
        server.add_generic_rpc_handlers((raw_echo_handler(),))
    else:
        predictor_pb2_grpc.add_PredictorServicer_to_server(NaiveServicer(), server)  # type: ignore[no-untyped-call]
    health = __import__("grpc_health.v1.health", fromlist=["HealthServicer"]).HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


# --- processes ------------------------------------------------------------------------------


def health_status(port: int) -> int | None:
    """Health of the server on ``port``, None while it does not answer."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=0.5
            )
        except grpc.RpcError:
            return None
    return int(reply.status)


def wait_serving(port: int, process: subprocess.Popen[bytes], timeout: float = 60) -> float:
    """Seconds until health says SERVING; raise if the process dies or time runs out."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if health_status(port) == health_pb2.HealthCheckResponse.SERVING:
            return time.perf_counter() - started
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        time.sleep(0.01)
    raise RuntimeError("server did not become SERVING")


@contextmanager
def server_process(command: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A server process, SERVING, stopped with SIGTERM afterwards."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(port, process)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def reference_command(kind: str, port: int) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "--serve", kind, "--port", str(port)]


@contextmanager
def serving_predictor(store: Path, log_path: Path, *extra: str) -> Iterator[int]:
    """squarenet-predictor (started by squarenet.stack), SERVING; yields its port."""
    service = start_predictor(store, log_path, *extra)
    try:
        wait_serving(service.port, service.process)
        yield service.port
    finally:
        service.stop()


# --- load -----------------------------------------------------------------------------------


def latency_run(port: int, calls: int, values: int = 1) -> list[float]:
    """Sequential calls on one connection (concurrency 1); seconds per call."""
    request = predictor_pb2.PredictRequest(x=[0.5] * values)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        predict = predictor_pb2_grpc.PredictorStub(channel).Predict  # type: ignore[no-untyped-call]
        for _ in range(min(50, calls)):
            predict(request, timeout=30)  # warm the connection and the server's threads
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            predict(request, timeout=30)
            times.append(time.perf_counter() - started)
    return times


def _load_process(port: int, concurrency: int, values: int, seconds: float, start_at: float) -> int:
    """One client process: ``concurrency`` calls in flight on its own connection."""

    async def main() -> int:
        request = predictor_pb2.PredictRequest(x=[0.5] * values)
        options = [("grpc.use_local_subchannel_pool", 1)]  # its own connection
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            predict = predictor_pb2_grpc.PredictorStub(channel).Predict  # type: ignore[no-untyped-call]
            await predict(request, timeout=30)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            end = time.time() + seconds
            done = 0

            async def worker() -> None:
                nonlocal done
                while time.time() < end:
                    await predict(request, timeout=30)
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done

    return asyncio.run(main())


def throughput(pool: Any, port: int, concurrency: int, seconds: float, values: int = 1) -> float:
    """Calls per second with ``concurrency`` calls in flight, spread over the client processes."""
    processes = LOAD_PROCESSES
    per_process = max(1, concurrency // processes)
    start_at = time.time() + 0.3
    counts = pool.starmap(
        _load_process, [(port, per_process, values, seconds, start_at)] * processes
    )
    return float(sum(counts)) / seconds


def interleaved(rounds: int, runs: dict[str, Callable[[], Any]]) -> dict[str, list[Any]]:
    """Run each measurement once per round, alternating, so machine noise hits all alike."""
    results: dict[str, list[Any]] = {name: [] for name in runs}
    names = list(runs)
    for round_ in range(rounds):
        for name in names if round_ % 2 == 0 else reversed(names):  # no server always first
            results[name].append(runs[name]())
    return results


# --- the run --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Figure:
    """One row of the table."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    goal: str = ""
    met: bool | None = None

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None


def trained_store(root: Path) -> Path:
    """A store holding one version made by the real trainer (a small, quick model)."""
    from squarenet.store import ModelStore
    from trainer_service.params import TrainingParams
    from trainer_service.training import train_and_publish

    store = ModelStore(root / "store")
    params = TrainingParams.model_validate({"n_samples": 2000, "epochs": 20, "seed": 1,
                                            "batch_size": 200})  # fmt: skip
    train_and_publish(params, store, job_id="bench", artifacts_dir=root / "artifacts")
    return store.root


def measure(quick: bool, console: Console) -> list[Figure]:
    """Every figure of the table, in one run, the servers side by side."""
    rounds = 2 if quick else 6
    seconds = 0.75 if quick else 1.5
    calls = 250 if quick else 500
    median = statistics.median
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="squarenet-bench-")))
        console.print("training a model for the store ...")
        store = trained_store(tmp)
        console.print("starting echo, naive Keras, squarenet-predictor (--workers 1 and 2) ...")
        echo, naive = free_port(), free_port()
        stack.enter_context(server_process(reference_command("echo", echo), echo))
        stack.enter_context(server_process(reference_command("naive", naive), naive))
        single = stack.enter_context(serving_predictor(store, tmp / "single.log"))
        double = stack.enter_context(serving_predictor(store, tmp / "double.log", "--workers", "2"))
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(LOAD_PROCESSES))

        console.print("latency at concurrency 1 ...")
        latency = interleaved(
            rounds,
            {"echo": lambda: latency_run(echo, calls), "sq": lambda: latency_run(single, calls)},
        )
        echo_lat = [t for batch in latency["echo"] for t in batch]
        sq_lat = [t for batch in latency["sq"] for t in batch]
        naive_lat = latency_run(naive, 5 if quick else 20)

        console.print("throughput ...")
        c8 = interleaved(
            rounds,
            {
                "echo": lambda: throughput(pool, echo, 8, seconds),
                "sq": lambda: throughput(pool, single, 8, seconds),
            },
        )
        c64 = interleaved(
            rounds,
            {
                "echo": lambda: throughput(pool, echo, 64, seconds),
                "sq": lambda: throughput(pool, single, 64, seconds),
                "sq2": lambda: throughput(pool, double, 64, seconds),
            },
        )
        big = interleaved(
            rounds,
            {
                "echo": lambda: throughput(pool, echo, 8, seconds, values=1000),
                "sq": lambda: throughput(pool, single, 8, seconds, values=1000),
            },
        )

        console.print("cold starts ...")
        starts = [cold_start(store) for _ in range(3 if quick else 5)]

    echo_p50, sq_p50 = median(echo_lat), median(sq_lat)
    echo_8, sq_8 = median(c8["echo"]), median(c8["sq"])
    echo_64, sq_64, sq2_64 = median(c64["echo"]), median(c64["sq"]), median(c64["sq2"])
    echo_big, sq_big = median(big["echo"]) * 1000, median(big["sq"]) * 1000
    return [
        Figure("p50 latency, 1 value, concurrency 1", sq_p50 * 1e3, "ms", echo_p50 * 1e3, "echo",
               f"<= {LATENCY_GOAL}x echo", sq_p50 <= LATENCY_GOAL * echo_p50),
        Figure("p99 latency, 1 value, concurrency 1", _p99(sq_lat) * 1e3, "ms",
               _p99(echo_lat) * 1e3, "echo", "report"),
        Figure("naive Keras server, p50 latency", median(naive_lat) * 1e3, "ms", echo_p50 * 1e3,
               "echo", "report"),
        Figure("calls/s, 1 value, concurrency 8", sq_8, "calls/s", echo_8, "echo",
               f">= {THROUGHPUT_GOAL}x echo", sq_8 >= THROUGHPUT_GOAL * echo_8),
        Figure("calls/s, 1 value, concurrency 64", sq_64, "calls/s", echo_64, "echo",
               f">= {THROUGHPUT_GOAL}x echo", sq_64 >= THROUGHPUT_GOAL * echo_64),
        Figure("predictions/s, 1000 values, concurrency 8", sq_big, "values/s", echo_big, "echo",
               f">= {PREDICTIONS_GOAL:,}", sq_big >= PREDICTIONS_GOAL),
        Figure("calls/s, concurrency 64, --workers 2", sq2_64, "calls/s", sq_64, "--workers 1",
               "report (scaling)"),
        Figure("cold start to SERVING, p50", median(starts), "s", None, "",
               f"<= {COLD_START_GOAL} s", median(starts) <= COLD_START_GOAL),
    ]  # fmt: skip


def cold_start(store: Path) -> float:
    """Seconds from starting squarenet-predictor to health SERVING with one model in store."""
    service = start_predictor(store, store.parent / "cold-start.log")
    try:
        return wait_serving(service.port, service.process)
    finally:
        service.stop()


def _p99(times: list[float]) -> float:
    return sorted(times)[min(len(times) - 1, int(len(times) * 0.99))]


def render(figures: list[Figure], console: Console, as_json: bool, bench: str = "serving") -> None:
    """The table: figure, baseline, ratio, goal, met."""
    table = Table(title=f"{bench.capitalize()} (one run on this machine)")
    for column in ("figure", "squarenet", "baseline", "ratio", "goal", "met"):
        table.add_column(column, justify="left" if column in ("figure", "goal") else "right")
    for f in figures:
        baseline = f"{_fmt(f.baseline)} ({f.baseline_name})" if f.baseline is not None else "-"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        table.add_row(f.name, f"{_fmt(f.value)} {f.unit}", baseline, ratio, f.goal, met)
        if as_json:
            print(json.dumps({"bench": bench, **f.__dict__, "ratio": f.ratio}), flush=True)
    console.print(table)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def main(argv: list[str] | None = None) -> int:
    """Run the measurements (or, with --serve, be one of the reference servers)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    parser.add_argument("--serve", choices=["echo", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        run_reference_server(args.serve, args.port)
        return 0
    console = Console(width=150)
    started = time.perf_counter()
    figures = measure(args.quick, console)
    render(figures, console, args.json)
    console.print(f"serving bench took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
