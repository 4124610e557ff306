"""The Open Inference Protocol (V2) against what users would run instead, one run.

Three servers answer the same model's V2 ``ModelInfer`` over gRPC on this machine, each a
separate process, each with the same LiteRT model (the trained version's ``model.tflite``):

* **squarenet** — ``squarenet-predictor``, V2 on the same port as its own API;
* **MLServer** 1.7.1 — a small custom ``MLModel`` (bench/competitors/mlserver_model.py),
  from its own virtualenv (.venv-mlserver), default settings but ``parallel_workers: 0``;
* **KServe** 0.21.0 — a small ``kserve.Model`` (bench/competitors/kserve_model.py), from
  .venv-kserve, default settings.

The client is the same for all three: pre-encoded ``ModelInferRequest`` bytes (FP32 input
``x`` as ``raw_input_contents``, what tritonclient sends) from separate client processes,
so decoding on the client side costs all three alike. A peer whose virtualenv cannot be
built, or that does not start, fails the benchmark (with pip's or its own error): a
comparison never silently loses its baseline.

In the same interleaved rounds run the ceiling (the sync and the ``grpc.aio`` raw echo of
bench/serving.py, answering the same V2 bytes; the faster is the ceiling) and squarenet's
own Predict and TF Serving Predict on the same predictor, so V2 is compared with the
ceiling and with squarenet's own API in one run, and every protocol's tail (p99, p99.9
at concurrency 1) is reported side by side.

    python bench/protocols.py           # the full table
    python bench/protocols.py --quick   # shorter runs, for a smoke test
    python bench/protocols.py --json    # also one JSON line per figure
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from rich.console import Console
from serving import (
    Ceiling,
    Figure,
    ceiling,
    interleaved,
    quantile,
    reference_command,
    render,
    server_process,
    serving_predictor,
    spread,
    trained_store,
)

from squarenet.stack import free_port
from squarenet.third_party.open_inference import dataplane_pb2 as v2
from squarenet.v1 import predictor_pb2

ROOT = Path(__file__).resolve().parent.parent
COMPETITORS = Path(__file__).resolve().parent / "competitors"
INFER = "/inference.GRPCInferenceService/ModelInfer"
OWN_PREDICT = "/squarenet.v1.Predictor/Predict"
TF_PREDICT = "/tensorflow.serving.PredictionService/Predict"
READY = "/inference.GRPCInferenceService/ModelReady"
CALLS_GOAL = 1.5
"""squarenet's calls/s at concurrency 8 must be at least this times each competitor's."""
LATENCY_GOAL = 0.65
"""squarenet's one-value p50 at concurrency 1 may be at most this times each competitor's."""
VALUES_GOAL = 1.5
"""squarenet's values/s with 1000-value calls must be at least this times each one's."""
CEILING_GOAL = 0.85
"""V2's calls/s (1 value) and values/s (1000 values) at concurrency 8: this share of the ceiling."""
OWN_API_GOAL = 1.0
"""V2's one-value calls/s at concurrency 8 against squarenet's own Predict's."""
PEERS = ("MLServer", "KServe")
LOAD_PROCESSES = 2


def infer_request(values: int) -> bytes:
    """One encoded ModelInferRequest: x = 0.5 ... as FP32 [values, 1] raw bytes."""
    tensor = v2.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[values, 1])
    request = v2.ModelInferRequest(
        model_name="square",
        inputs=[tensor],
        raw_input_contents=[np.full(values, 0.5, dtype="<f4").tobytes()],
    )
    return bytes(request.SerializeToString())


def own_request() -> bytes:
    """squarenet's own one-value PredictRequest."""
    return bytes(predictor_pb2.PredictRequest(x=[0.5]).SerializeToString())


_TF_REQUEST = """
from squarenet.third_party.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2
from squarenet.third_party.tensorflow_serving.apis import model_pb2, predict_pb2
dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=1)] * 2
tensor = tensor_pb2.TensorProto(
    dtype=1, tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=dims), float_val=[0.5]
)
spec = model_pb2.ModelSpec(name="square")
print(predict_pb2.PredictRequest(model_spec=spec, inputs={"x": tensor}).SerializeToString().hex())
"""


def tf_request() -> bytes:
    """A one-value TF Serving PredictRequest (DT_FLOAT [1, 1] float_val), as its clients send.

    Encoded in a child process: the vendored TensorFlow Serving messages carry TensorFlow's
    own names, and this process imports TensorFlow to train the model.
    """
    run = subprocess.run(
        [sys.executable, "-c", _TF_REQUEST], capture_output=True, text=True, check=True
    )
    return bytes.fromhex(run.stdout.strip())


def first_y(answer: bytes) -> float:
    """y[0] from an encoded ModelInferResponse, raw or in contents (servers differ)."""
    response = v2.ModelInferResponse.FromString(answer)
    output = next(o for o in response.outputs if o.name == "y")
    if response.raw_output_contents:
        dtype = "<f8" if output.datatype == "FP64" else "<f4"
        return float(np.frombuffer(response.raw_output_contents[0], dtype=dtype)[0])
    contents = output.contents
    return float((list(contents.fp32_contents) or list(contents.fp64_contents))[0])


# --- servers ------------------------------------------------------------------------------


def model_ready(port: int) -> bool:
    """V2 ModelReady for ``square`` (False while the server does not answer)."""
    request = v2.ModelReadyRequest(name="square").SerializeToString()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = channel.unary_unary(READY)(request, timeout=1)
        except grpc.RpcError:
            return False
    return bool(v2.ModelReadyResponse.FromString(answer).ready)


@contextmanager
def server(command: list[str], port: int, log: Path, cwd: Path | None = None) -> Iterator[None]:
    """A V2 server process, ready, stopped with SIGTERM afterwards."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + 120
        while not model_ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{command[0]} did not become ready: {tail}")
            time.sleep(0.2)
        yield
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def environment(which: str) -> tuple[str | None, str]:
    """The competitor's interpreter from scripts/client-venv.sh, or None and pip's error."""
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/client-venv.sh"), which],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if run.returncode != 0:
        errors = [line for line in run.stderr.splitlines() if "ERROR" in line or "error" in line]
        return None, " ".join(errors[-2:]) or run.stderr[-400:]
    return run.stdout.strip().splitlines()[-1], ""


def mlserver(
    python: str, tflite: Path, folder: Path, port: int
) -> contextlib.AbstractContextManager[None]:
    """MLServer serving the custom model class from ``folder`` (its settings written here)."""
    folder.mkdir()
    shutil.copy(COMPETITORS / "mlserver_model.py", folder)
    settings = {
        "http_port": free_port(),
        "grpc_port": port,
        "metrics_port": free_port(),
        # Its default pool of inference worker processes dies at start here (uvloop: "There
        # is no current event loop in thread 'MainThread'"); 0 runs the model in the server
        # process, which its docs advise for light models anyway.
        "parallel_workers": 0,
    }
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": "square",
        "implementation": "mlserver_model.SquareModel",
        "parameters": {"uri": str(tflite)},
    }
    (folder / "model-settings.json").write_text(json.dumps(model))
    command = [str(Path(python).parent / "mlserver"), "start", str(folder)]
    return server(command, port, folder.parent / "mlserver.log", cwd=folder)


def kserve(
    python: str, tflite: Path, folder: Path, port: int
) -> contextlib.AbstractContextManager[None]:
    """KServe's ModelServer running the custom model class."""
    command = [
        python, str(COMPETITORS / "kserve_model.py"), "--model_path", str(tflite),
        "--http_port", str(free_port()), "--grpc_port", str(port),
    ]  # fmt: skip
    return server(command, port, folder.parent / "kserve.log")


# --- load ---------------------------------------------------------------------------------


def latency_run(port: int, calls: int, request: bytes, method: str = INFER) -> list[float]:
    """Sequential calls on one connection (concurrency 1); seconds per call."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        infer = channel.unary_unary(method)
        for _ in range(min(50, calls)):
            infer(request, timeout=30)
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            infer(request, timeout=30)
            times.append(time.perf_counter() - started)
    return times


def _load_process(  # noqa: PLR0917 (pool.starmap passes positions)
    port: int, concurrency: int, request: bytes, seconds: float, start_at: float, method: str
) -> int:
    """One client process: ``concurrency`` calls in flight on its own connection."""

    async def main() -> int:
        options = [("grpc.use_local_subchannel_pool", 1)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            infer = channel.unary_unary(method)
            await infer(request, timeout=30)
            await asyncio.sleep(max(0.0, start_at - time.time()))
            end = time.time() + seconds
            done = 0

            async def worker() -> None:
                nonlocal done
                while time.time() < end:
                    await infer(request, timeout=30)
                    done += 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return done

    return asyncio.run(main())


def throughput(  # noqa: PLR0917 (one load run's whole description)
    pool: Any, port: int, concurrency: int, seconds: float, request: bytes, method: str = INFER
) -> float:
    """Calls per second with ``concurrency`` calls in flight, over the client processes."""
    processes = 1 if concurrency == 1 else LOAD_PROCESSES
    per_process = max(1, concurrency // processes)
    start_at = time.time() + 0.3
    counts = pool.starmap(
        _load_process, [(port, per_process, request, seconds, start_at, method)] * processes
    )
    return float(sum(counts)) / seconds


# --- the run ------------------------------------------------------------------------------


class PeerMissing(RuntimeError):
    """A peer could not be installed or started: the comparison would lose its baseline."""


def measure(quick: bool, console: Console) -> list[Figure]:
    """Every figure, the servers measured side by side, interleaved round by round."""
    rounds = 2 if quick else 4
    seconds = 0.75 if quick else 1.5
    calls = 200 if quick else 1000  # p99.9 of 4 x 1000 calls: the 4th slowest
    one, thousand = infer_request(1), infer_request(1000)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="squarenet-v2-bench-")))
        console.print("training a model for the store ...")
        store = trained_store(tmp)
        tflite = next(store.glob("square/*/model.tflite"))
        ports: dict[str, int] = {
            "squarenet": stack.enter_context(serving_predictor(store, tmp / "sq.log"))
        }
        for name, start in (("MLServer", mlserver), ("KServe", kserve)):
            console.print(f"preparing {name} ...")
            python, error = environment(name.lower())
            if python is None:
                raise PeerMissing(f"{name} cannot be installed here: {error[:300]}")
            port = free_port()
            try:
                stack.enter_context(start(python, tflite, tmp / name.lower(), port))
            except RuntimeError as exc:
                raise PeerMissing(f"{name} did not start: {str(exc)[-300:]}") from exc
            ports[name] = port
        for name, port in ports.items():
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                y = first_y(channel.unary_unary(INFER)(one, timeout=30))
            console.print(f"{name} answers y(0.5) = {y:.3f}")
        echoes = {"echo": free_port(), "aio echo": free_port()}
        for kind, port in zip(("echo", "echo-aio"), echoes.values(), strict=True):
            stack.enter_context(server_process(reference_command(kind, port), port))
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(LOAD_PROCESSES))
        throughput(pool, echoes["echo"], LOAD_PROCESSES, 0.3, one)  # warm-up (serving.warm_up)
        sq = ports["squarenet"]
        v2_servers = {**ports, **echoes}
        runs: dict[str, dict[str, list[Any]]] = {}
        console.print("latency at concurrency 1 ...")
        runs["lat"] = interleaved(
            rounds,
            {
                **{n: partial(latency_run, p, calls, one) for n, p in v2_servers.items()},
                "own": partial(latency_run, sq, calls, own_request(), OWN_PREDICT),
                "tf": partial(latency_run, sq, calls, tf_request(), TF_PREDICT),
            },
        )
        for concurrency in (1, 8, 64):
            console.print(f"calls/s at concurrency {concurrency} ...")
            servers = v2_servers if concurrency == 8 else ports
            measured = {n: partial(throughput, pool, p, concurrency, seconds, one)
                        for n, p in servers.items()}  # fmt: skip
            if concurrency == 8:
                measured["own"] = partial(throughput, pool, sq, 8, seconds, own_request(),
                                          OWN_PREDICT)  # fmt: skip
            runs[f"c{concurrency}"] = interleaved(rounds, measured)
        console.print("1000-value calls at concurrency 8 ...")
        runs["big"] = interleaved(
            rounds,
            {n: partial(throughput, pool, p, 8, seconds, thousand) for n, p in v2_servers.items()},
        )
    return _figures(runs)


def _figures(runs: dict[str, dict[str, list[Any]]]) -> list[Figure]:
    median = statistics.median
    lat = {name: [t for batch in runs["lat"][name] for t in batch] for name in runs["lat"]}
    p50 = {name: median(times) * 1e3 for name, times in lat.items()}
    p99 = {name: quantile(times, 0.99) * 1e3 for name, times in lat.items()}
    p999 = {name: quantile(times, 0.999) * 1e3 for name, times in lat.items()}
    calls = {c: {n: median(v) for n, v in runs[f"c{c}"].items()} for c in (1, 8, 64)}
    values = {n: median(v) * 1000 for n, v in runs["big"].items()}
    c8, big = runs["c8"], runs["big"]
    sq = "squarenet"
    figures = []
    for other in PEERS:
        figures += [
            Figure(f"V2 p50 latency, 1 value, c=1 vs {other}", p50[sq], "ms", p50[other], other,
                   f"<= {LATENCY_GOAL}x", p50[sq] <= LATENCY_GOAL * p50[other]),
            Figure(f"V2 p99 latency, 1 value, c=1 vs {other}", p99[sq], "ms", p99[other], other,
                   "<= 1.0x", p99[sq] <= p99[other]),
            Figure(f"V2 p99.9 latency, 1 value, c=1 vs {other}", p999[sq], "ms", p999[other],
                   other, "report"),
            Figure(f"V2 calls/s, 1 value, c=1 vs {other}", calls[1][sq], "calls/s",
                   calls[1][other], other, "report"),
            Figure(f"V2 calls/s, 1 value, c=8 vs {other}", calls[8][sq], "calls/s",
                   calls[8][other], other, f">= {CALLS_GOAL}x",
                   calls[8][sq] >= CALLS_GOAL * calls[8][other], spread(c8[sq]),
                   spread(c8[other])),
            Figure(f"V2 calls/s, 1 value, c=64 vs {other}", calls[64][sq], "calls/s",
                   calls[64][other], other, "report"),
            Figure(f"V2 values/s, 1000 values, c=8 vs {other}", values[sq], "values/s",
                   values[other], other, f">= {VALUES_GOAL}x",
                   values[sq] >= VALUES_GOAL * values[other], spread(big[sq]),
                   spread(big[other])),
        ]  # fmt: skip
    top_8, top_big = ceiling(c8), ceiling(big)
    figures += [
        _against("V2 calls/s, 1 value, c=8 vs the ceiling", c8[sq], top_8, "calls/s"),
        _against("V2 values/s, 1000 values, c=8 vs the ceiling", big[sq], top_big, "values/s",
                 scale=1000),
        Figure("V2 calls/s, 1 value, c=8 vs own Predict", calls[8][sq], "calls/s",
               calls[8]["own"], "own Predict, same server", f">= {OWN_API_GOAL}x",
               calls[8][sq] >= OWN_API_GOAL * calls[8]["own"], spread(c8[sq]),
               spread(c8["own"])),
    ]  # fmt: skip
    low = ceiling({n: [median(batch) for batch in runs["lat"][n]] for n in ("echo", "aio echo")},
                  higher_is_better=False)  # fmt: skip
    # Every protocol's tail beside the aio echo's (one event loop, no thread hand-off) and
    # the sync echo's (the predictor's server model): which part of a tail is the model's.
    shown = {"own": "own Predict", sq: "V2 ModelInfer", "tf": "TF Serving Predict",
             "MLServer": "MLServer V2", "KServe": "KServe V2", "echo": "sync echo"}  # fmt: skip
    for name, label in shown.items():
        figures += [
            Figure(f"tail, 1 value, c=1: {label}, p99 (p50 {p50[name]:.2f} ms)", p99[name], "ms",
                   p99["aio echo"], "aio echo", "report"),
            Figure(f"tail, 1 value, c=1: {label}, p99.9", p999[name], "ms", p999["aio echo"],
                   "aio echo", "report"),
        ]  # fmt: skip
    figures.append(
        Figure(
            "p50 latency, 1 value, c=1: V2 vs the ceiling",
            p50[sq],
            "ms",
            low.value * 1e3,
            low.name,
            "report",
        )
    )
    return figures


def _against(name: str, rounds: list[float], top: Ceiling, unit: str, scale: float = 1.0) -> Figure:
    value = statistics.median(rounds) * scale
    return Figure(name, value, unit, top.value * scale, top.name, f">= {CEILING_GOAL}x ceiling",
                  value >= CEILING_GOAL * top.value * scale, spread(rounds),
                  spread(top.rounds))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table (and JSON lines)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    args = parser.parse_args(argv)
    console = Console(width=170)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        figures = measure(args.quick, console)
    except PeerMissing as exc:
        console.print(f"[red]{exc}[/]: no comparison without it (make bench-venvs)")
        return 1
    render(figures, console, args.json, bench="protocols")
    console.print(
        f"protocols bench took {time.perf_counter() - started:.0f} s; load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
