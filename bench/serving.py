"""Serving speed: squarenet-predictor against an echo server and a naive Keras server, one run.

Three servers run on this machine in the same run, each a separate process:

* **echo** — a minimal grpcio thread-pool server (``grpc.server``) with the predictor's
  settings (same thread count, same message limits) whose Predict returns the request's
  bytes untouched (no decoding, no encoding, no work);
* **aio echo** — the same echo on a ``grpc.aio`` server (one event loop, no thread pool),
  the server model the predictor runs on.
  The faster of the two echoes, figure by figure, is **the ceiling**: the most a Python
  grpcio server does on this machine. Both run in every round, so which server model
  reaches it is measured, not assumed;
* **naive** — the seed's way: Keras ``model.predict`` per request (few requests suffice).
* **squarenet** — ``squarenet-predictor`` on a temp store holding one trained version.

Load comes from separate client processes (asyncio gRPC clients, one connection each) so
the client's own Python time does not share the server's interpreter. The servers take
turns round by round (``interleaved``), figures are medians over the rounds with the spread
between identical rounds ((max - min) / median) beside them, and every ratio is against
the ceiling measured in the same rounds; nothing here fails on a wall-clock number.

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
from collections.abc import Callable, Iterator, Mapping
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
"""squarenet's one-value p50 at concurrency 1 may be at most this times the ceiling's."""
THROUGHPUT_GOAL = 0.9
"""squarenet's one-value calls/s must reach this share of the ceiling's."""
BULK_GOAL = 0.9
"""squarenet's values/s with 1000-value calls must reach this share of the ceiling's."""
COLD_START_GOAL = 1.0
"""Seconds from process start to health SERVING (p50 over the starts)."""
LOAD_PROCESSES = 2
"""Client processes generating load (each with its own connection)."""


# --- the reference servers ------------------------------------------------------------------


#: The inference call of every protocol the predictor speaks: the echo answers each, so a
#: benchmark measures the ceiling on its own protocol's path and message sizes.
ECHOED = {
    "squarenet.v1.Predictor": "Predict",
    "inference.GRPCInferenceService": "ModelInfer",
    "tensorflow.serving.PredictionService": "Predict",
}


def echo_handlers(echo: Callable[..., Any]) -> tuple[grpc.GenericRpcHandler, ...]:
    """``echo`` (no (de)serializer: bytes in, bytes out) for each protocol's inference call."""
    return tuple(
        grpc.method_handlers_generic_handler(
            service, {method: grpc.unary_unary_rpc_method_handler(echo)}
        )
        for service, method in ECHOED.items()
    )


def _aio_echo_handlers() -> tuple[grpc.GenericRpcHandler, ...]:
    """The raw echo for a ``grpc.aio`` server: a coroutine."""

    async def echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
        return request

    return echo_handlers(echo)


def run_aio_echo(port: int) -> None:
    """The raw echo on ``grpc.aio`` with the predictor's options, health included, until SIGTERM."""
    from grpc_health.v1.health import aio as health_aio

    from predictor_service.server import server_options

    settings = PredictorSettings.model_validate({"model_store": ".", "port": port})

    async def serve() -> None:
        server = grpc.aio.server(options=server_options(settings))
        server.add_generic_rpc_handlers(_aio_echo_handlers())
        health_pb2_grpc.add_HealthServicer_to_server(health_aio.HealthServicer(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    asyncio.run(serve())


def raw_echo_handlers() -> tuple[grpc.GenericRpcHandler, ...]:
    """Each inference call answered with the request's own bytes (x's field reads back as y's).

    No (de)serializer: grpcio hands the handler bytes and sends its bytes back, so this is
    what a call costs when decoding, the model and encoding all cost nothing.
    """

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        return request

    return echo_handlers(echo)


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

    if kind == "echo-aio":
        run_aio_echo(port)
        return
    settings = PredictorSettings.model_validate({"model_store": ".", "port": port})
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.threads),
        options=server_options(settings),
    )
    if kind == "echo":
        server.add_generic_rpc_handlers(raw_echo_handlers())
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


def warm_up(pool: Any, port: int) -> None:
    """One discarded load run, so no measured round pays for the load processes' start.

    Spawned load processes import grpcio and this module on their first task: a second or
    so of CPU on a 2-core machine. Without this, that lands in whichever server is measured
    first, as a tail no server has (it once doubled V2's p99).
    """
    throughput(pool, port, LOAD_PROCESSES, 0.3)


def interleaved(rounds: int, runs: Mapping[str, Callable[[], Any]]) -> dict[str, list[Any]]:
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
    #: (max - min) / median of the value, and of the baseline, over identical rounds.
    spread: float | None = None
    baseline_spread: float | None = None

    @property
    def ratio(self) -> float | None:
        return self.value / self.baseline if self.baseline else None


def spread(rounds: list[float]) -> float | None:
    """How far identical rounds lie apart: (max - min) / median (None for one round)."""
    middle = statistics.median(rounds)
    return (max(rounds) - min(rounds)) / middle if len(rounds) > 1 and middle else None


def quantile(times: list[float], q: float) -> float:
    """The ``q`` quantile of ``times`` (nearest rank)."""
    ordered = sorted(times)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@dataclass(frozen=True)
class Ceiling:
    """The faster echo for one measurement: its name, its median, its rounds."""

    name: str
    value: float
    rounds: list[float]


def ceiling(results: dict[str, list[float]], higher_is_better: bool = True) -> Ceiling:
    """The faster of the sync and the aio echo, by median over the rounds."""
    median = statistics.median
    pick = max if higher_is_better else min
    name = pick(("echo", "aio echo"), key=lambda kind: median(results[kind]))
    return Ceiling(f"ceiling: {name}", median(results[name]), results[name])


def versus_ceiling(name: str, rounds: list[float], top: Ceiling, unit: str, *, goal: float,
                   scale: float = 1.0) -> Figure:  # fmt: skip
    """A throughput figure against the ceiling, met when at least ``goal`` times it."""
    value = statistics.median(rounds) * scale
    return Figure(name, value, unit, top.value * scale, top.name, f">= {goal}x ceiling",
                  value >= goal * top.value * scale, spread(rounds), spread(top.rounds))  # fmt: skip


def echo_race(
    what: str,
    results: dict[str, list[float]],
    unit: str,
    *,
    scale: float = 1.0,
    higher_is_better: bool = True,
) -> Figure:
    """The aio echo against the sync echo for one measurement, and how many rounds it won."""
    aio, sync = results["aio echo"], results["echo"]
    won = sum((a > s) == higher_is_better for a, s in zip(aio, sync, strict=True))
    return Figure(f"ceiling: aio echo vs sync echo, {what}", statistics.median(aio) * scale,
                  unit, statistics.median(sync) * scale, "sync echo",
                  f"report: aio faster in {won} of {len(aio)} rounds", None, spread(aio),
                  spread(sync))  # fmt: skip


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
        console.print("starting echo, aio echo, naive Keras, squarenet-predictor (1 and 2 workers)")
        echo, aio, naive = free_port(), free_port(), free_port()
        stack.enter_context(server_process(reference_command("echo", echo), echo))
        stack.enter_context(server_process(reference_command("echo-aio", aio), aio))
        stack.enter_context(server_process(reference_command("naive", naive), naive))
        single = stack.enter_context(serving_predictor(store, tmp / "single.log"))
        double = stack.enter_context(serving_predictor(store, tmp / "double.log", "--workers", "2"))
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(LOAD_PROCESSES))
        warm_up(pool, echo)

        console.print("latency at concurrency 1 ...")
        latency = interleaved(
            rounds,
            {
                "echo": lambda: latency_run(echo, calls),
                "aio echo": lambda: latency_run(aio, calls),
                "sq": lambda: latency_run(single, calls),
            },
        )
        naive_lat = latency_run(naive, 5 if quick else 20)

        console.print("throughput ...")
        c8 = interleaved(
            rounds,
            {
                "echo": lambda: throughput(pool, echo, 8, seconds),
                "aio echo": lambda: throughput(pool, aio, 8, seconds),
                "sq": lambda: throughput(pool, single, 8, seconds),
            },
        )
        c64 = interleaved(
            rounds,
            {
                "echo": lambda: throughput(pool, echo, 64, seconds),
                "aio echo": lambda: throughput(pool, aio, 64, seconds),
                "sq": lambda: throughput(pool, single, 64, seconds),
                "sq2": lambda: throughput(pool, double, 64, seconds),
            },
        )
        big = interleaved(
            rounds,
            {
                "echo": lambda: throughput(pool, echo, 8, seconds, values=1000),
                "aio echo": lambda: throughput(pool, aio, 8, seconds, values=1000),
                "sq": lambda: throughput(pool, single, 8, seconds, values=1000),
            },
        )

        console.print("cold starts ...")
        starts = [cold_start(store) for _ in range(3 if quick else 5)]

    p50s = {name: [median(batch) for batch in batches] for name, batches in latency.items()}
    every = {name: [t for batch in batches for t in batch] for name, batches in latency.items()}
    low = ceiling(p50s, higher_is_better=False)
    top_8, top_64, top_big = ceiling(c8), ceiling(c64), ceiling(big)
    sq_p50 = median(p50s["sq"])
    sq_64 = median(c64["sq"])
    return [
        echo_race("calls/s, 1 value, concurrency 8", c8, "calls/s"),
        echo_race("calls/s, 1 value, concurrency 64", c64, "calls/s"),
        echo_race("values/s, 1000 values, concurrency 8", big, "values/s", scale=1000),
        echo_race("p50 latency, 1 value, concurrency 1", p50s, "ms", scale=1e3,
                  higher_is_better=False),
        Figure("p50 latency, 1 value, concurrency 1", sq_p50 * 1e3, "ms", low.value * 1e3,
               low.name, f"<= {LATENCY_GOAL}x ceiling", sq_p50 <= LATENCY_GOAL * low.value,
               spread(p50s["sq"]), spread(low.rounds)),
        Figure("p99 latency, 1 value, concurrency 1", quantile(every["sq"], 0.99) * 1e3, "ms",
               quantile(every["echo"], 0.99) * 1e3, "sync echo", "report"),
        Figure("p99.9 latency, 1 value, concurrency 1", quantile(every["sq"], 0.999) * 1e3, "ms",
               quantile(every["echo"], 0.999) * 1e3, "sync echo", "report"),
        Figure("naive Keras server, p50 latency", median(naive_lat) * 1e3, "ms", low.value * 1e3,
               low.name, "report"),
        versus_ceiling("calls/s, 1 value, concurrency 8", c8["sq"], top_8, "calls/s",
                       goal=THROUGHPUT_GOAL),
        versus_ceiling("calls/s, 1 value, concurrency 64", c64["sq"], top_64, "calls/s",
                       goal=THROUGHPUT_GOAL),
        versus_ceiling("predictions/s, 1000 values, concurrency 8", big["sq"], top_big,
                       "values/s", goal=BULK_GOAL, scale=1000),
        Figure("calls/s, concurrency 64, --workers 2", median(c64["sq2"]), "calls/s", sq_64,
               "--workers 1", "report (scaling)", None, spread(c64["sq2"]), spread(c64["sq"])),
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


def render(figures: list[Figure], console: Console, as_json: bool, bench: str = "serving") -> None:
    """The table: figure, baseline, ratio, goal, met."""
    table = Table(title=f"{bench.capitalize()} (one run on this machine)")
    for column in ("figure", "squarenet", "baseline", "ratio", "goal", "met"):
        table.add_column(column, justify="left" if column in ("figure", "goal") else "right")
    for f in figures:
        baseline = "-"
        if f.baseline is not None:
            baseline = f"{_fmt(f.baseline)}{_spread(f.baseline_spread)} ({f.baseline_name})"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        met = "-" if f.met is None else ("yes" if f.met else "NO")
        value = f"{_fmt(f.value)} {f.unit}{_spread(f.spread)}"
        table.add_row(f.name, value, baseline, ratio, f.goal, met)
        if as_json:
            print(json.dumps({"bench": bench, **f.__dict__, "ratio": f.ratio}), flush=True)
    console.print(table)


def _spread(value: float | None) -> str:
    return "" if value is None else f" (spread {value * 100:.0f} %)"


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def main(argv: list[str] | None = None) -> int:
    """Run the measurements (or, with --serve, be one of the reference servers)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    parser.add_argument("--serve", choices=["echo", "echo-aio", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        run_reference_server(args.serve, args.port)
        return 0
    console = Console(width=170)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    figures = measure(args.quick, console)
    render(figures, console, args.json)
    console.print(
        f"serving bench took {time.perf_counter() - started:.0f} s; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after; spread: (max - min) / median "
        "over identical rounds"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
