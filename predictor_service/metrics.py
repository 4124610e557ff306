"""Prometheus metrics of the predictor, served on ``--metrics-port``.

With ``--workers N`` every worker process writes its figures into a shared folder
(prometheus-client's multiprocess mode, selected by ``PROMETHEUS_MULTIPROC_DIR`` before
this module is imported) and the parent process serves their sum on the one port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    multiprocess,
    start_http_server,
)

disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only add noise to every scrape

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)

REQUESTS = Counter(
    "squarenet_predictor_requests_total",
    "gRPC calls answered, by method and status code.",
    ["method", "code"],
)
LATENCY = Histogram(
    "squarenet_predictor_request_duration_seconds",
    "Time spent answering a gRPC call, by method and status code.",
    ["method", "code"],
    buckets=_LATENCY_BUCKETS,
)
LOADED_VERSIONS = Gauge(
    "squarenet_predictor_loaded_versions",
    "How many versions are loaded and can be pinned.",
    multiprocess_mode="livemax",
)
VERSION_LOADED = Gauge(
    "squarenet_predictor_version_loaded",
    "1 while a version is loaded, 0 after it was unloaded.",
    ["version"],
    multiprocess_mode="livemax",
)
CURRENT_VERSION = Gauge(
    "squarenet_predictor_current_version",
    "The version answering calls that pin none (0: no model yet).",
    multiprocess_mode="livemax",
)
CALLS_IN_FLIGHT = Gauge(
    "squarenet_predictor_calls_in_flight",
    "Unary calls being answered now (streams not counted).",
    multiprocess_mode="livesum",
)
LOADS = Counter("squarenet_predictor_model_loads_total", "Versions verified, loaded and warmed.")
LOAD_FAILURES = Counter(
    "squarenet_predictor_load_failures_total",
    "Broken versions skipped (each distinct folder content counted once).",
)

STORE_POLLS = Counter(
    "squarenet_predictor_store_polls_total",
    "Looks at the store the poller finished (it stops rising when the poller stalls).",
)

Recorder = Callable[[float], None]
_recorders: dict[tuple[str, grpc.StatusCode], Recorder] = {}
_recorders_lock = threading.Lock()


def recorder(method: str, code: grpc.StatusCode) -> Recorder:
    """A function that counts one call and observes its duration, labels bound once."""
    key = (method, code)
    found = _recorders.get(key)
    if found is not None:
        return found
    with _recorders_lock:
        counter = REQUESTS.labels(method, code.name)
        histogram = LATENCY.labels(method, code.name)

        def record(seconds: float) -> None:
            counter.inc()
            histogram.observe(seconds)

        return _recorders.setdefault(key, record)


def show_versions(loaded: list[int], unloaded: list[int], served: int | None) -> None:
    """Reflect the loaded versions (newest first) and the default one in the gauges."""
    LOADED_VERSIONS.set(len(loaded))
    CURRENT_VERSION.set(served or 0)
    for version in loaded:
        VERSION_LOADED.labels(str(version)).set(1)
    for version in unloaded:
        VERSION_LOADED.labels(str(version)).set(0)


def serve_metrics(host: str, port: int, *, multiprocess_dir: str | None = None) -> None:
    """Serve /metrics on ``port`` in a daemon thread (summing workers when multiprocess)."""
    if multiprocess_dir is None:
        start_http_server(port, addr=host)
        return
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=host, registry=registry)
