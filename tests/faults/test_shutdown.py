"""SIGTERM to the predictor under load: NOT_SERVING first, calls in flight finish, exit 0 in time.

(The trainer's SIGTERM with a running job is checked in tests/rest/test_server.py and
tests/runner/test_runner_local.py.)
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from predictor.predictor_harness import (
    NOT_SERVING,
    SERVING,
    Launcher,
    ShutdownReport,
    add_version,
)
from support import patient, wait_for

from faults.load import Call, PredictLoad, summary
from squarenet.store import ModelStore
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

GRACE_PERIOD = patient(5.0)  # the calls in flight need well under a second of it
BIG_BATCH = 300_000  # a call that takes a while, so some are likely in flight at SIGTERM
REFUSED = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}


class BigCalls(threading.Thread):
    """One client sending large batches until the server refuses; keeps each outcome."""

    def __init__(self, target: str) -> None:
        super().__init__(daemon=True)
        self.channel = grpc.insecure_channel(
            target, options=[("grpc.max_receive_message_length", 1 << 25)]
        )
        self.calls: list[Call] = []
        self.start()

    def run(self) -> None:
        stub = predictor_pb2_grpc.PredictorStub(self.channel)  # type: ignore[no-untyped-call]
        request = predictor_pb2.PredictRequest(x=[0.25] * BIG_BATCH)
        while True:
            started = time.monotonic()
            try:
                response = stub.Predict(request, timeout=patient(30))
            except grpc.RpcError as exc:
                self.calls.append(Call(started, time.monotonic() - started, exc.code(), 0, 1))
                return
            self.calls.append(
                Call(started, time.monotonic() - started, grpc.StatusCode.OK, response.version, 1)
            )


@pytest.mark.slow
def test_sigterm_under_load_flips_health_first_and_refuses_only_new_calls(
    store: ModelStore, trained_version: Path, launcher: Launcher
) -> None:
    add_version(store, trained_version)
    predictor = launcher.start(
        store, "--grace-period", str(GRACE_PERIOD), "--max-batch", str(BIG_BATCH)
    )
    predictor.wait_serving()
    target = f"127.0.0.1:{predictor.port}"
    health_seen: list[tuple[float, int]] = []
    watch_channel = grpc.insecure_channel(target)
    watch = health_pb2_grpc.HealthStub(watch_channel).Watch(
        health_pb2.HealthCheckRequest(service=""), timeout=60
    )

    def follow_health() -> None:
        try:
            for message in watch:
                health_seen.append((time.monotonic(), int(message.status)))
        except grpc.RpcError:
            pass

    follower = threading.Thread(target=follow_health, daemon=True)
    follower.start()
    big = [BigCalls(target) for _ in range(2)]
    with PredictLoad(target, 16) as load:
        wait_for(
            lambda: len(load.calls) > 2000 and all(b.calls for b in big),
            60,
            "the load to be under way",
        )
        sigterm_at = time.monotonic()
        predictor.process.send_signal(signal.SIGTERM)
        # The grace period, plus exit; the server's report below says whether it was needed.
        code = predictor.process.wait(GRACE_PERIOD + patient(3))
        exited_at = time.monotonic()
    for client in big:
        client.join(patient(30))
        client.channel.close()
    follower.join(patient(10))
    watch_channel.close()
    report = predictor.shutdown_report()
    calls = load.calls + [call for client in big for call in client.calls]
    answered_after = [
        c for c in calls if c.code == grpc.StatusCode.OK and c.started + c.latency > sigterm_at
    ]
    print(
        f"\npredictor SIGTERM under load: exit {code} after {exited_at - sigterm_at:.2f} s "
        f"(grace {GRACE_PERIOD} s, a health Watch open); all calls: {summary(calls)}; "
        f"the server held {report.in_flight} at SIGTERM and cut off {report.cut_off}; "
        f"answered after SIGTERM: {len(answered_after)}"
    )
    assert code == 0
    statuses = [status for _, status in health_seen]
    assert statuses[0] == SERVING
    assert NOT_SERVING in statuses  # told before the server went away
    # Which calls the server held when it stopped taking new ones is its own count: no
    # client can tell when its call arrived, so no client-side time window decides it.
    assert report.cut_off == 0
    assert len(answered_after) >= report.in_flight
    finished_before = [c for c in calls if c.started + c.latency < sigterm_at]
    assert finished_before and all(c.code == grpc.StatusCode.OK for c in finished_before)
    refused = [c for c in calls if c.code != grpc.StatusCode.OK]
    assert refused  # calls kept coming after SIGTERM and were refused, ...
    assert {c.code for c in refused} <= REFUSED  # ... as UNAVAILABLE, or CANCELLED when ...
    # ... grpcio had accepted a call but not started it as the server stopped: at most the
    # one call each client had open at that moment.
    assert len([c for c in refused if c.code == grpc.StatusCode.CANCELLED]) <= 16 + len(big)


@pytest.mark.slow
def test_open_health_watches_end_at_shutdown_instead_of_holding_the_grace_period(
    store: ModelStore, trained_version: Path, launcher: Launcher
) -> None:
    """A watching load balancer gets NOT_SERVING, then the end of its stream (status OK)."""
    add_version(store, trained_version)
    long_grace = patient(60.0)
    predictor = launcher.start(store, "--grace-period", str(long_grace))
    predictor.wait_serving()
    with grpc.insecure_channel(f"127.0.0.1:{predictor.port}") as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=""), timeout=long_grace * 2
        )
        assert next(watch).status == SERVING
        predictor.process.send_signal(signal.SIGTERM)
        rest = [message.status for message in watch]  # ends without RpcError: status OK
        assert watch.code() is grpc.StatusCode.OK
    assert rest[-1:] == [NOT_SERVING]
    # nothing else is in flight, so the process does not sit out the 60 s grace period
    assert predictor.process.wait(long_grace / 2) == 0
    assert predictor.shutdown_report() == ShutdownReport(in_flight=0, cut_off=0)
