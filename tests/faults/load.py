"""A bounded Predict load on loopback: threads with their own channels, every call recorded.

Each worker remembers the versions it was answered by, so a test can check that versions
only move forward for every client. With ``retry_for`` a worker retries UNAVAILABLE (a
restarting server) with ``wait_for_ready`` until that many seconds have passed; a call
counts as failed only when it never succeeded.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from support import patient

from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

CALL_TIMEOUT = patient(10.0)  # a failed call fails the test: generous for a busy machine
REQUEST = predictor_pb2.PredictRequest(x=[0.5, 1.5, -2.0, 7.0])


@dataclass(frozen=True)
class Call:
    """One Predict call as a client saw it (retries included)."""

    started: float
    latency: float
    code: grpc.StatusCode
    version: int
    attempts: int


@dataclass
class Worker:
    """One client: its channel and the calls it made, in order."""

    index: int
    calls: list[Call] = field(default_factory=list)

    def versions_move_forward(self) -> bool:
        """True when no answer came from an older version than an earlier answer."""
        versions = [call.version for call in self.calls if call.code == grpc.StatusCode.OK]
        return all(a <= b for a, b in itertools.pairwise(versions))


class PredictLoad:
    """``concurrency`` clients calling Predict until stopped, at most ``rate`` calls/s in all."""

    def __init__(
        self,
        target: str,
        concurrency: int,
        *,
        rate: float | None = None,
        retry_for: float = 0.0,
        max_seconds: float = 300.0,
    ) -> None:
        self.target = target
        self.interval = concurrency / rate if rate else 0.0
        self.retry_for = retry_for
        self.max_seconds = max_seconds
        self.workers = [Worker(index) for index in range(concurrency)]
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(worker,), daemon=True)
            for worker in self.workers
        ]

    def __enter__(self) -> PredictLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every client and wait for the calls in flight."""
        self._stop.set()
        for thread in self._threads:
            thread.join(CALL_TIMEOUT + self.retry_for + 5)

    @property
    def calls(self) -> list[Call]:
        """Every call of every client."""
        return [call for worker in self.workers for call in list(worker.calls)]

    def failures(self) -> list[Call]:
        """Calls that never got an answer."""
        return [call for call in self.calls if call.code != grpc.StatusCode.OK]

    def _run(self, worker: Worker) -> None:
        deadline = time.monotonic() + self.max_seconds
        with grpc.insecure_channel(self.target) as channel:
            stub = predictor_pb2_grpc.PredictorStub(channel)  # type: ignore[no-untyped-call]
            next_call = time.monotonic() + self.interval * worker.index / len(self.workers)
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self.interval:
                    self._stop.wait(max(0.0, next_call - time.monotonic()))
                    next_call += self.interval
                    if self._stop.is_set():
                        break
                worker.calls.append(self._call(stub))

    def _call(self, stub: predictor_pb2_grpc.PredictorStub) -> Call:
        started = time.monotonic()
        give_up = started + self.retry_for
        attempts = 0
        while True:
            attempts += 1
            try:
                response = stub.Predict(
                    REQUEST, timeout=CALL_TIMEOUT, wait_for_ready=self.retry_for > 0
                )
            except grpc.RpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.UNAVAILABLE and time.monotonic() < give_up:
                    time.sleep(0.05)
                    continue
                return Call(started, time.monotonic() - started, code, 0, attempts)
            return Call(
                started, time.monotonic() - started, grpc.StatusCode.OK, response.version, attempts
            )


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[rank]


def summary(calls: Sequence[Call]) -> str:
    """Calls, failures by code, p50 and p99 in milliseconds: one line for the test output."""
    latencies = [call.latency for call in calls if call.code == grpc.StatusCode.OK]
    failed: dict[str, int] = {}
    for call in calls:
        if call.code != grpc.StatusCode.OK:
            failed[call.code.name] = failed.get(call.code.name, 0) + 1
    retried = sum(1 for call in calls if call.attempts > 1)
    return (
        f"{len(calls)} calls, failed {failed or 0}, retried {retried}, "
        f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms"
    )
