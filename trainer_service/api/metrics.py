"""Prometheus metrics of the REST API, correct under several gunicorn workers.

Under ``squarenet-trainer`` every worker writes its counters into
``PROMETHEUS_MULTIPROC_DIR`` (prometheus-client's multiprocess mode) and a scrape of any
worker adds them all up. Job counts are not kept in memory at all: they are read from the
job records on the store at scrape time, so every worker (and every replica sharing the
store) reports the same numbers. Being store-wide, they must not be summed across replicas.
They are a gauge, never a counter: retention forgets old finished jobs, so the number of
finished jobs on the store goes down, which a counter must never do.

Label values come from fixed sets only (route templates, known methods, status codes), so
no client can grow ``/metrics`` by sending made-up paths or methods.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from flask import Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from trainer_service.lifecycle import RunState
from trainer_service.runner.book import JobBook

disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the output and nobody graphs them

UNMATCHED_ROUTE = "<unmatched>"  # 404s: never one label per made-up URL
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OTHER_METHOD = "other"  # any other method a client makes up: one label for all of them

HTTP_REQUESTS = Counter(
    "squarenet_http_requests",
    "HTTP requests answered, by route template, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "squarenet_http_request_duration_seconds",
    "Time to answer (for event streams: to the first byte), by route template and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
JOBS_SUBMITTED = Counter(
    "squarenet_jobs_submitted", "Jobs accepted by POST /v1/jobs on this trainer replica."
)
JOBS_REJECTED = Counter(
    "squarenet_jobs_rejected", "Job submissions refused because the queue was full."
)


class JobStateCollector(Collector):
    """Jobs by state, read from the store's records when Prometheus scrapes."""

    def __init__(self, book: JobBook) -> None:
        self.book = book

    def collect(self) -> Iterator[Metric]:
        """``squarenet_jobs{state}``: how many jobs the store holds in each state now."""
        counts = self.book.counts()
        current = GaugeMetricFamily(
            "squarenet_jobs",
            "Jobs on the store by state (store-wide; retention lowers the finished ones).",
            labels=["state"],
        )
        for state in RunState:
            current.add_metric([state.value], counts.get(state, 0))
        yield current


class _DefaultRegistry(Collector):
    """The in-process metrics when there is no multiprocess folder (tests, one worker)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def exposition(book: JobBook) -> bytes:
    """The Prometheus text of this replica: HTTP metrics of every worker, job counts."""
    registry = CollectorRegistry(auto_describe=True)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_DefaultRegistry())
    registry.register(JobStateCollector(book))
    return generate_latest(registry)


def metrics_response(book: JobBook) -> Response:
    """The ``/metrics`` answer."""
    return Response(exposition(book), mimetype=None, content_type=CONTENT_TYPE_LATEST)


def _start_timer() -> None:
    g.squarenet_started = time.perf_counter()


def method_label(method: str) -> str:
    """The ``method`` label: the method itself when it is a known one, else ``other``."""
    return method if method in KNOWN_METHODS else OTHER_METHOD


def _observe(response: Response) -> Response:
    rule = request.url_rule
    route = rule.rule if rule is not None else UNMATCHED_ROUTE
    method = method_label(request.method)
    HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
    started = g.get("squarenet_started")
    if started is not None:
        HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
    return response


def init_app(app: Flask) -> None:
    """Count and time every request ``app`` answers."""
    app.before_request(_start_timer)
    app.after_request(_observe)
