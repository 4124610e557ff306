"""The bound on event streams, against the real ``squarenet-trainer`` (gunicorn, 2 workers).

Each open stream holds a worker thread. Past ``--max-event-streams`` per worker a stream is
answered 503 with ``Retry-After`` at once, and the threads left over keep answering probes
and the rest of the API, however many clients try to stream or cancel.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from filelock import Timeout
from support import service_env, wait_for

from rest.rest_helpers import processes_mentioning
from squarenet.stack import Trainer, running_trainer
from squarenet.store import ModelStore, local_lock
from trainer_service.runner.book import BOOK_LOCK

pytestmark = pytest.mark.slow

WORKERS, THREADS, STREAMS_PER_WORKER = 2, 4, 3
REPLICA_BOUND = WORKERS * STREAMS_PER_WORKER
CLIENTS = REPLICA_BOUND + 10
ANSWER_SECONDS = 10.0  # "at once", generously: no stream may wait this long for its head
LONG_JOB = {"n_samples": 200, "epochs": 5000, "batch_size": 32, "seed": 2}
SPARE_THREADS = WORKERS * (THREADS - STREAMS_PER_WORKER)  # what the streams leave
CANCELS = 4 * SPARE_THREADS


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[Trainer]:
    # set through the environment, as a Deployment would
    env = service_env(
        {
            "SQUARENET_MAX_EVENT_STREAMS": str(STREAMS_PER_WORKER),
            "SQUARENET_SSE_KEEPALIVE": "0.2",  # a closed client is noticed at the next write
        }
    )
    with running_trainer(
        tmp_path / "store", tmp_path / "trainer.log", "--threads", str(THREADS), env=env
    ) as running:
        yield running


def open_stream(base_url: str, path: str) -> socket.socket:
    """A connection that has sent its GET and not yet read anything."""
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    sock = socket.create_connection((host, port), timeout=ANSWER_SECONDS)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    return sock


def response_head(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """Status and headers of the answer (socket.timeout when none comes in time)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before the head: {data!r}")
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:])
    return int(head[0].split()[1]), {k.lower(): v for k, v in headers.items()}


def stream_accepted(base_url: str, path: str) -> bool:
    """Whether a new stream gets its 200 now."""
    with open_stream(base_url, path) as sock:
        return response_head(sock)[0] == 200


def flood(base: str, path: str, still_answers: str) -> None:
    """More clients than the bound stream ``path``: each gets its head at once, the ones
    past the bound a 503 problem with ``Retry-After``, and the API keeps answering."""
    sockets = [open_stream(base, path) for _ in range(CLIENTS)]
    try:
        heads = [response_head(sock) for sock in sockets]  # none may hang
        streaming = [s for s, (status, _) in zip(sockets, heads, strict=True) if status == 200]
        busy = [headers for status, headers in heads if status == 503]
        assert len(streaming) + len(busy) == CLIENTS, [status for status, _ in heads]
        assert 0 < len(streaming) <= REPLICA_BOUND
        assert all(int(headers["retry-after"]) > 0 for headers in busy)
        assert all(h["content-type"] == "application/problem+json" for h in busy)
        for _ in range(2 * WORKERS):  # fresh connections reach both workers
            assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200
            assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            assert httpx.get(f"{base}{still_answers}", timeout=5).status_code == 200
    finally:
        for sock in sockets:
            sock.close()
    # the slots come back once the server notices the clients left
    wait_for(lambda: stream_accepted(base, path), 30, "a stream to be accepted again")


def test_streams_past_the_bound_are_503_at_once_and_the_api_keeps_answering(
    trainer: Trainer,
) -> None:
    base = trainer.base_url
    job_id = httpx.post(f"{base}/v1/jobs", json=LONG_JOB, timeout=10).json()["id"]
    flood(base, f"/v1/jobs/{job_id}/events", f"/v1/jobs/{job_id}")
    assert httpx.post(f"{base}/v1/jobs/{job_id}/cancel", timeout=30).status_code in (200, 202)


def test_sweep_streams_share_the_same_bound(trainer: Trainer) -> None:
    base = trainer.base_url
    spec = {
        "base": LONG_JOB,
        "parameters": [
            {"name": "num_neurons", "parameterType": "int", "feasibleSpace": {"list": [2, 4]}}
        ],
        "algorithm": {"algorithmName": "grid"},
        "objective": {"type": "minimize", "objectiveMetricName": "mse_in_domain"},
        "parallelTrialCount": 1,
    }
    answer = httpx.post(f"{base}/v1/sweeps", json=spec, timeout=10)
    assert answer.status_code == 202, answer.text
    sweep_id = answer.json()["id"]
    flood(base, f"/v1/sweeps/{sweep_id}/events", f"/v1/sweeps/{sweep_id}")
    assert httpx.post(f"{base}/v1/sweeps/{sweep_id}/cancel", timeout=30).status_code in (200, 202)


def job_runner_of(trainer: Trainer) -> int:
    """The pid of the trainer's job runner (``trainer_service.control_loop``)."""
    runners = [
        pid
        for pid in processes_mentioning(str(trainer.store))
        if "-m\x00trainer_service.control_loop\x00" in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    assert len(runners) == 1, runners
    return runners[0]


def process_state(pid: int) -> str:
    """The one-letter state of ``/proc/<pid>/stat`` (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]


def stopped_between_state_changes(runner: int, store: Path) -> bool:
    """Stop the runner (SIGSTOP); True once it is stopped and holds no job book lock, else
    it goes on (SIGCONT) and the caller tries again: the API's cancel takes that lock."""
    os.kill(runner, signal.SIGSTOP)
    wait_for(lambda: process_state(runner) == "T", 10, "the job runner to stop")
    lock = local_lock(ModelStore(store).jobs_dir / BOOK_LOCK)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        os.kill(runner, signal.SIGCONT)
        return False
    lock.release()
    return True


def test_cancels_with_every_stream_slot_taken_answer_at_once_and_healthz_too(
    trainer: Trainer,
) -> None:
    """A cancel records its request and answers: it never waits for the runner to confirm.

    The runner is stopped, so no cancel can be confirmed while the test looks; every stream
    slot of both workers is taken, so only ``SPARE_THREADS`` threads are left; more cancels
    than that are sent at once with ``/healthz`` among them. A cancel that held its thread
    until the runner confirmed would leave none of them for the rest.
    """
    base = trainer.base_url
    job_id = httpx.post(f"{base}/v1/jobs", json=LONG_JOB, timeout=10).json()["id"]
    job_url = f"{base}/v1/jobs/{job_id}"
    wait_for(
        lambda: httpx.get(job_url, timeout=10).json()["state"] == "RUNNING", 90, "the job to run"
    )
    streams: list[socket.socket] = []

    def one_more_stream() -> bool:
        sock = open_stream(base, f"/v1/jobs/{job_id}/events")
        if response_head(sock)[0] == 200:
            streams.append(sock)
        else:
            sock.close()
        return len(streams) == REPLICA_BOUND

    runner = job_runner_of(trainer)
    try:
        wait_for(
            lambda: stopped_between_state_changes(runner, trainer.store),
            30,
            "the job runner stopped between state changes",
        )
        wait_for(one_more_stream, 30, "every stream slot of both workers to be taken")
        with ThreadPoolExecutor(CANCELS + 2 * WORKERS) as pool:
            cancels = [
                pool.submit(httpx.post, f"{job_url}/cancel", timeout=ANSWER_SECONDS)
                for _ in range(CANCELS)
            ]
            probes = [  # fresh connections reach both workers
                pool.submit(httpx.get, f"{base}/healthz", timeout=ANSWER_SECONDS)
                for _ in range(2 * WORKERS)
            ]
            answers = [future.result() for future in cancels]
            healthz = [future.result() for future in probes]
        assert [answer.status_code for answer in answers] == [202] * CANCELS
        assert {answer.json()["state"] for answer in answers} == {"RUNNING"}
        assert [probe.status_code for probe in healthz] == [200] * (2 * WORKERS)
        assert httpx.get(f"{base}/healthz", timeout=ANSWER_SECONDS).status_code == 200
    finally:
        os.kill(runner, signal.SIGCONT)
        for sock in streams:
            sock.close()
    # the recorded cancel is honoured once the runner goes on
    wait_for(
        lambda: httpx.get(job_url, timeout=10).json()["state"] == "CANCELLED",
        90,
        "the runner to stop the cancelled job",
    )
