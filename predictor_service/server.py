"""``serve()``: one predictor process — gRPC server, health, reflection, poller, SIGTERM.

Health starts NOT_SERVING for ``""`` and ``squarenet.v1.Predictor`` and turns SERVING when
the first version is loaded. On SIGTERM (or SIGINT) health flips to NOT_SERVING at once,
WatchModel streams end, the server refuses new calls and gives calls in flight up to
``grace_period`` seconds, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from predictor_service.draining_health import DrainingHealthServicer
from predictor_service.in_flight import CALLS
from predictor_service.metrics import serve_metrics
from predictor_service.open_inference import SERVICE_NAME as V2_SERVICE
from predictor_service.open_inference import OpenInferenceServicer, add_open_inference
from predictor_service.poller import Poller
from predictor_service.registry import Registry, Snapshot
from predictor_service.servicer import PredictorServicer
from predictor_service.settings import PredictorSettings
from predictor_service.supervisor import follow_supervisor
from predictor_service.traffic import EjectionPolicy, Planner, SessionInterceptor
from predictor_service.wire import add_predictor_to_server
from squarenet.store import ModelStore
from squarenet.v1 import predictor_pb2

log = logging.getLogger("predictor_service")

SERVICE_NAME: str = predictor_pb2.DESCRIPTOR.services_by_name["Predictor"].full_name
_HEALTH_SERVICES = ("", SERVICE_NAME)


def server_options(settings: PredictorSettings) -> list[tuple[str, int]]:
    """grpcio channel arguments: message limits that match --max-batch, port sharing."""
    options = [
        ("grpc.max_receive_message_length", settings.max_receive_message_length),
        ("grpc.max_send_message_length", settings.max_send_message_length),
        # On by default in gRPC: off unless --workers asks, so a busy port fails loudly.
        ("grpc.so_reuseport", 1 if settings.reuse_port else 0),
    ]
    if settings.max_connection_age:
        age_ms = int(settings.max_connection_age * 1000)
        options += [
            ("grpc.max_connection_age_ms", age_ms),
            ("grpc.max_connection_age_grace_ms", int(settings.grace_period * 1000)),
        ]
    return options


def add_protocols(
    settings: PredictorSettings, registry: Registry, server: grpc.Server
) -> list[str]:
    """Add the Open Inference Protocol and TensorFlow Serving's services; return their names.

    TensorFlow Serving's messages carry TensorFlow's own protobuf names, which cannot be
    loaded twice into one process: with ``--runtime tensorflow`` those services are left out.
    """
    v2 = OpenInferenceServicer(
        registry,
        model_name=settings.model_name,
        max_batch=settings.max_batch,
        runtime=settings.runtime,
    )
    add_open_inference(v2, server)
    if settings.runtime != "litert":
        log.info("TensorFlow Serving's services need --runtime litert; not offered")
        return [V2_SERVICE]
    from predictor_service import tf_serving  # noqa: PLC0415 (never with TensorFlow loaded)

    tf_servicer = tf_serving.TensorFlowServingServicer(
        registry, model_name=settings.model_name, max_batch=settings.max_batch
    )
    tf_serving.add_tf_serving(tf_servicer, server)
    return [V2_SERVICE, tf_serving.PREDICTION_SERVICE, tf_serving.MODEL_SERVICE]


def serve(settings: PredictorSettings) -> int:
    """Run one predictor process until SIGTERM or SIGINT; return its exit code."""
    registry = Registry()
    health_servicer = DrainingHealthServicer(experimental_non_blocking=True)
    for service in _HEALTH_SERVICES:
        health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    server = grpc.server(
        ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="grpc"),
        options=server_options(settings),
        interceptors=[SessionInterceptor()],
    )
    add_predictor_to_server(
        PredictorServicer(
            registry, max_batch=settings.max_batch, max_watchers=settings.max_watchers
        ),
        server,
    )
    protocols = add_protocols(settings, registry, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, *protocols, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        log.error("cannot listen on %s: %s", address, exc)
        return 1
    server.start()

    stopping = threading.Event()

    def on_change(snapshot: Snapshot) -> None:
        if snapshot.default is not None and not stopping.is_set():
            for service in _HEALTH_SERVICES:
                health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    poller = Poller(
        ModelStore(settings.model_store),
        registry,
        model_name=settings.model_name,
        runtime=settings.runtime,
        versions=settings.versions,
        poll_interval=settings.poll_interval,
        serve_label=settings.serve_label,
        on_change=on_change,
        planner=Planner(
            EjectionPolicy(
                window=settings.eject_window,
                min_calls=settings.eject_min_calls,
                factor=settings.eject_factor,
                failures=settings.eject_failures,
            ),
            on_eject=registry.refresh,
        ),
    )

    signalled: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signalled.append(signum)  # no lock: the main thread may hold one when this runs

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if settings.reuse_port:
        follow_supervisor()
    if settings.metrics_port:
        serve_metrics(settings.host, settings.metrics_port)
    log.info(
        "listening on %s:%d model=%s runtime=%s store=%s metrics_port=%s",
        settings.host,
        port,
        settings.model_name,
        settings.runtime,
        settings.model_store,
        settings.metrics_port or "off",
    )
    if not settings.model_store.is_dir():
        log.warning(
            "model store %s does not exist (yet); NOT_SERVING until it has a version",
            settings.model_store,
        )
    poller.start()
    # The signal handler takes no lock (one the main thread holds when the signal lands
    # would deadlock it); a short poll turns the signal into NOT_SERVING within 50 ms.
    while not signalled:
        time.sleep(0.05)
    stopping.set()

    health_servicer.enter_graceful_shutdown()
    health_servicer.end_watches()
    registry.close()
    stopped = server.stop(settings.grace_period)  # refuses new calls from here on
    log.info(
        "stopping: NOT_SERVING, %d calls in flight, %.1f s for them",
        CALLS.count,
        settings.grace_period,
    )
    stopped.wait()
    poller.stop()
    cut_off = CALLS.count  # handlers still running when the grace period ended
    if cut_off:
        log.warning(
            "stopped: %d calls cut off by the %.1f s grace period", cut_off, settings.grace_period
        )
    else:
        log.info("stopped: every call in flight was answered")
    return 0
