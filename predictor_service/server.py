"""``serve()``: one predictor process — gRPC server, health, reflection, poller, SIGTERM.

The server is grpcio's asyncio server: one event loop answers every call (large ones go to
a thread pool, ``wire``), which reaches more calls per second than the thread-pool server
on this workload (``bench/serving.py`` measures both echoes in every run). The poller and
the metrics endpoint run on threads of their own and reach the loop thread-safely.

Health starts NOT_SERVING for ``""`` and ``squarenet.v1.Predictor`` and turns SERVING when
the first version is loaded. On SIGTERM (or SIGINT) health flips to NOT_SERVING at once,
health Watch and WatchModel streams end, the server refuses new calls and gives calls in
flight up to ``grace_period`` seconds, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from predictor_service.draining_health import DrainingHealthServicer
from predictor_service.in_flight import CALLS
from predictor_service.metrics import serve_metrics
from predictor_service.open_inference import SERVICE_NAME as V2_SERVICE
from predictor_service.open_inference import OpenInferenceServicer
from predictor_service.poller import Poller
from predictor_service.registry import Registry, Snapshot
from predictor_service.servicer import PredictorServicer
from predictor_service.settings import PredictorSettings
from predictor_service.supervisor import follow_supervisor
from predictor_service.traffic import EjectionPolicy, Planner
from predictor_service.wire import add_service
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
    settings: PredictorSettings,
    registry: Registry,
    server: grpc.aio.Server,
    executor: ThreadPoolExecutor,
) -> list[str]:
    """Add squarenet's, the Open Inference Protocol's and TensorFlow Serving's services.

    Returns the names of the services added. TensorFlow Serving's messages carry
    TensorFlow's own protobuf names, which cannot be loaded twice into one process: with
    ``--runtime tensorflow`` those services are left out.
    """
    own = PredictorServicer(
        registry,
        model_name=settings.model_name,
        max_batch=settings.max_batch,
        max_watchers=settings.max_watchers,
    )
    add_service(server, SERVICE_NAME, own.methods(), executor)
    v2 = OpenInferenceServicer(
        registry,
        model_name=settings.model_name,
        max_batch=settings.max_batch,
        runtime=settings.runtime,
    )
    add_service(server, V2_SERVICE, v2.methods(), executor)
    if settings.runtime != "litert":
        log.info("TensorFlow Serving's services need --runtime litert; not offered")
        return [SERVICE_NAME, V2_SERVICE]
    from predictor_service import tf_serving  # noqa: PLC0415 (never with TensorFlow loaded)

    tf_servicer = tf_serving.TensorFlowServingServicer(
        registry, model_name=settings.model_name, max_batch=settings.max_batch
    )
    prefix = "tensorflow.serving."
    add_service(
        server,
        tf_serving.PREDICTION_SERVICE,
        tf_servicer.prediction_methods(),
        executor,
        metric_prefix=prefix,
    )
    add_service(
        server,
        tf_serving.MODEL_SERVICE,
        tf_servicer.model_methods(),
        executor,
        metric_prefix=prefix,
    )
    return [SERVICE_NAME, V2_SERVICE, tf_serving.PREDICTION_SERVICE, tf_serving.MODEL_SERVICE]


def serve(settings: PredictorSettings) -> int:
    """Run one predictor process until SIGTERM or SIGINT; return its exit code."""
    return asyncio.run(_serve(settings))


async def _serve(settings: PredictorSettings) -> int:
    loop = asyncio.get_running_loop()
    registry = Registry()
    health_servicer = DrainingHealthServicer()
    for service in _HEALTH_SERVICES:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)

    server = grpc.aio.server(options=server_options(settings))
    executor = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="grpc")
    protocols = add_protocols(settings, registry, server, executor)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*protocols, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        log.error("cannot listen on %s: %s", address, exc)
        return 1
    await server.start()

    stopping = asyncio.Event()

    async def serving() -> None:
        if not stopping.is_set():
            for service in _HEALTH_SERVICES:
                await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)

    def on_change(snapshot: Snapshot) -> None:  # on the poller's thread
        if snapshot.default is not None:
            asyncio.run_coroutine_threadsafe(serving(), loop)

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

    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    loop.add_signal_handler(signal.SIGINT, stopping.set)
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
    await stopping.wait()

    await health_servicer.enter_graceful_shutdown()  # NOT_SERVING; health watches end
    registry.close()  # WatchModel streams end
    stopped = asyncio.ensure_future(server.stop(settings.grace_period))
    await asyncio.sleep(0)  # the server refuses new calls from here on
    log.info(
        "stopping: NOT_SERVING, %d calls in flight, %.1f s for them",
        CALLS.count,
        settings.grace_period,
    )
    deadline = loop.time() + settings.grace_period
    while CALLS.count and loop.time() < deadline:
        await asyncio.sleep(0.01)
    cut_off = CALLS.count  # handlers still running when the grace period ended
    await stopped
    poller.stop()
    executor.shutdown(wait=False, cancel_futures=True)
    if cut_off:
        log.warning(
            "stopped: %d calls cut off by the %.1f s grace period", cut_off, settings.grace_period
        )
    else:
        log.info("stopped: every call in flight was answered")
    return 0
