"""``--workers N``: N predictor processes on one port (SO_REUSEPORT), one parent watching them.

The kernel spreads new connections over the workers, so throughput grows with cores that
one Python process (one GIL) cannot use. Each worker polls the store itself. The parent
forwards SIGTERM/SIGINT, serves the workers' summed metrics on ``--metrics-port`` and exits
0 when they all did; a worker that dies is restarted, unless it died right after starting
(bad configuration), which stops the whole group.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from types import FrameType

from prometheus_client import multiprocess

from predictor_service.logs import configure_logging
from predictor_service.metrics import serve_metrics
from predictor_service.settings import PredictorSettings

log = logging.getLogger("predictor_service")

_EARLY_EXIT_SECONDS = 5.0
#: Set in each worker's environment: the parent it must not outlive.
SUPERVISOR_PID_VARIABLE = "SQUARENET_SUPERVISOR_PID"
_PR_SET_PDEATHSIG = 1


def follow_supervisor() -> None:
    """In a worker: get SIGTERM when the parent dies, so no worker outlives a killed group."""
    expected = os.environ.get(SUPERVISOR_PID_VARIABLE)
    if not expected:
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        log.warning("cannot ask to be stopped with the parent; relying on its SIGTERM")
    if str(os.getppid()) != expected:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_environment(settings: PredictorSettings, metrics_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        env[f"SQUARENET_{name.upper()}"] = str(value)
    env.update(
        SQUARENET_WORKERS="1",
        SQUARENET_METRICS_PORT="0",
        SQUARENET_REUSE_PORT="true",
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
    )
    env[SUPERVISOR_PID_VARIABLE] = str(os.getpid())
    return env


def run_workers(settings: PredictorSettings) -> int:
    """Start the workers, keep them running, stop them on SIGTERM; return the exit code."""
    metrics_dir = tempfile.mkdtemp(prefix="squarenet-predictor-metrics-")
    configure_logging()
    env = _worker_environment(settings, metrics_dir)
    command = [sys.executable, "-m", "predictor_service.cli"]
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start() -> tuple[subprocess.Popen[bytes], float]:
        # our own interpreter running our own module, argv built from validated settings
        return subprocess.Popen(command, env=env), time.monotonic()  # noqa: S603

    workers = [start() for _ in range(settings.workers)]
    log.info("started %d workers pids=%s", len(workers), [w.pid for w, _ in workers])
    if settings.metrics_port:
        serve_metrics(settings.host, settings.metrics_port, multiprocess_dir=metrics_dir)
    failed = False
    try:
        while not stopping.wait(0.2):
            for index, (worker, started) in enumerate(workers):
                code = worker.poll()
                if code is None:
                    continue
                _forget(worker.pid, metrics_dir)
                if time.monotonic() - started < _EARLY_EXIT_SECONDS:
                    log.error("worker pid=%d exited with %d at start; stopping", worker.pid, code)
                    failed = True
                    stopping.set()
                    break
                log.warning("worker pid=%d exited with %d; restarting it", worker.pid, code)
                workers[index] = start()
        for worker, _ in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        codes = [worker.wait() for worker, _ in workers]
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    log.info("workers stopped codes=%s", codes)
    return 1 if failed or any(codes) else 0


def _forget(pid: int, metrics_dir: str) -> None:
    """Drop a dead worker's live gauges from the summed metrics."""
    multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]
