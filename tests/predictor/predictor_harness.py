"""Test support for the predictor: real predictor processes, copies of trained versions."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from support import wait_for

from squarenet import stack
from squarenet.store import METADATA_FILE, ModelStore
from squarenet.v1 import predictor_pb2_grpc

SERVICE = "squarenet.v1.Predictor"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: Finished looks at the store: waiting for it to rise proves the poller ran meanwhile.
POLLS = "squarenet_predictor_store_polls_total"
#: Polling fast keeps the tests short; the default is 0.5 s.
POLL_INTERVAL = "0.1"


def add_version(store: ModelStore, source: Path) -> int:
    """Publish a copy of a trained version folder into ``store``; return its new number."""
    metadata = json.loads((source / METADATA_FILE).read_text(encoding="utf-8"))
    staging = store.staging_dir(tag="test")
    shutil.copytree(
        source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(METADATA_FILE)
    )
    for key in ("files", "version", "format", "model_name"):
        metadata.pop(key, None)
    return store.publish_version(staging, metadata).version


@dataclass(frozen=True)
class ShutdownReport:
    """The server's own count at SIGTERM: no client can tell when its call reached it."""

    in_flight: int  # unary calls being answered when the server stopped taking new ones
    cut_off: int  # of those, still running when the grace period ended


@dataclass
class Predictor:
    """A started ``squarenet-predictor`` (``squarenet.stack``) and a channel to it."""

    service: stack.Predictor
    channel: grpc.Channel = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.service.target)
        self.stub = predictor_pb2_grpc.PredictorStub(self.channel)  # type: ignore[no-untyped-call]
        self.health = health_pb2_grpc.HealthStub(self.channel)

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The predictor's process."""
        return self.service.process

    @property
    def port(self) -> int:
        """Its gRPC port."""
        return self.service.port

    @property
    def metrics_port(self) -> int:
        """Its /metrics port."""
        return self.service.metrics_port

    @property
    def log_path(self) -> Path:
        """Where its output goes."""
        return self.service.log_path

    def health_status(self, service: str = "") -> int | None:
        """The health status of ``service``, or None when the server does not answer."""
        try:
            response = self.health.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
        except grpc.RpcError:
            return None
        return int(response.status)

    def wait_serving(self, timeout: float = 20) -> None:
        """Until health says SERVING for both the server and the service."""
        wait_for(
            lambda: self.health_status("") == SERVING and self.health_status(SERVICE) == SERVING,
            timeout,
            "health SERVING",
        )

    def log(self) -> str:
        """Everything the process wrote so far."""
        return self.service.log()

    def shutdown_report(self) -> ShutdownReport:
        """What the stopped server logged about the calls it held when it stopped."""
        text = self.log()
        held = re.search(r"stopping: NOT_SERVING, (\d+) calls in flight", text)
        cut = re.search(r"stopped: (\d+) calls cut off", text)
        answered = "stopped: every call in flight was answered" in text
        assert held and (cut or answered), f"no shutdown report in the log:\n{text}"
        return ShutdownReport(int(held.group(1)), int(cut.group(1)) if cut else 0)

    def metric(self, name: str, **labels: str) -> float:
        """One sample from /metrics (0 when absent)."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return 0.0

    def terminate(self, timeout: float = 30) -> int:
        """SIGTERM, then the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def close(self) -> None:
        """Close the channel and make sure the process is gone."""
        self.channel.close()
        self.service.stop(timeout=15)


class Launcher:
    """Starts real predictor processes on free ports, logging into ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Predictor] = []

    def start(
        self,
        store: ModelStore,
        *args: str,
        env: dict[str, str] | None = None,
        wait_listening: bool = True,
        command: list[str] | None = None,
        port: int = 0,
        metrics_port: int = 0,
    ) -> Predictor:
        """Start one (on the given ports, else free ones); by default wait until it listens."""
        service = stack.start_predictor(
            store.root,
            self.log_dir / f"predictor-{len(self.started)}.log",
            "--poll-interval", POLL_INTERVAL, *args,
            port=port, metrics_port=metrics_port,
            env={**os.environ, **(env or {})}, command=command,
        )  # fmt: skip
        predictor = Predictor(service)
        self.started.append(predictor)
        if wait_listening:
            service.wait_until(
                lambda: predictor.health_status() is not None, "the predictor to listen", 20
            )
        return predictor

    def close_all(self) -> None:
        """Kill whatever is still running."""
        for predictor in self.started:
            predictor.close()


def store_state(root: Path) -> dict[str, Any]:
    """Every path below ``root`` with its size and mtime: equal before and after = untouched."""
    return {
        str(path.relative_to(root)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(root.rglob("*"))
    }
