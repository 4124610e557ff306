"""The real ``squarenet-trainer``: gunicorn with 2 workers and its job runner, on a temp store."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import patient, service_env, wait_for

from rest.rest_helpers import TINY, metric_value, parse_sse, processes_mentioning
from squarenet.stack import Trainer, running_trainer
from squarenet.store import ModelStore

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def trainer(tmp_path: Path) -> Iterator[Trainer]:
    with running_trainer(tmp_path / "store", tmp_path / "trainer.log") as running:
        yield running


def follow_events(base_url: str, job_id: str) -> list[dict[str, str]]:
    """Read the whole event stream of a job (it ends after the final state)."""
    with httpx.stream("GET", f"{base_url}/v1/jobs/{job_id}/events", timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return parse_sse("".join(response.iter_text()))


def stop(trainer: Trainer) -> int:
    """SIGTERM the service and return its exit code."""
    trainer.process.send_signal(signal.SIGTERM)
    try:
        return trainer.process.wait(timeout=patient(60))
    except subprocess.TimeoutExpired:
        pytest.fail(f"squarenet-trainer ignored SIGTERM:\n{trainer.log()}")


def test_a_tiny_job_end_to_end_then_sigterm_exits_0(trainer: Trainer) -> None:
    base = trainer.base_url
    submitted = httpx.post(f"{base}/v1/jobs", json={**TINY, "seed": 7}, timeout=10)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]
    assert submitted.headers["location"] == f"/v1/jobs/{job_id}"

    events = follow_events(base, job_id)
    epochs = [json.loads(e["data"]) for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3, 4, 5], trainer.log()
    assert all(e["epochs"] == 5 and e["loss"] > 0 for e in epochs)
    assert events[-1]["event"] == "state"
    final = json.loads(events[-1]["data"])
    assert final["state"] == "SUCCEEDED", trainer.log()

    job = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()
    assert job["state"] == "SUCCEEDED" and job["model_version"] == 1
    assert job["progress"] == {"epoch": 5, "epochs": 5}
    assert job["metrics"]["loss"] > 0

    models = httpx.get(f"{base}/v1/models", timeout=10).json()["models"]
    assert [(m["model_name"], m["version"], m["status"]) for m in models] == [("square", 1, "ok")]
    assert models[0]["metadata"]["job_id"] == job_id
    assert ModelStore(trainer.store).latest_version() is not None

    for plot in ("loss", "fit"):
        image = httpx.get(f"{base}/v1/jobs/{job_id}/plots/{plot}.png", timeout=10)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(PNG_MAGIC)

    for _ in range(20):  # fresh connections: the kernel spreads them over both workers
        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    for _ in range(6):  # whichever worker answers, it reports every worker's counts
        text = httpx.get(f"{base}/metrics", timeout=10).text
        assert metric_value(text, "squarenet_jobs_submitted_total") == 1
        assert metric_value(text, "squarenet_jobs", state="SUCCEEDED") == 1
        assert (
            metric_value(
                text, "squarenet_http_requests_total", route="/healthz", method="GET", status="200"
            )
            == 20
        )

    if shutil.which("curl"):
        curl = subprocess.run(
            ["curl", "-sS", "-i", f"{base}/v1/jobs/{job_id}"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert curl.stdout.startswith("HTTP/1.1 200")
        assert '"state":"SUCCEEDED"' in curl.stdout

    assert stop(trainer) == 0, trainer.log()
    assert processes_mentioning(str(trainer.store)) == []
    assert "job runner stopped" in trainer.log()


def test_sigterm_during_a_job_and_a_stream_stops_everything_and_the_restart_resumes_the_job(
    tmp_path: Path,
) -> None:
    # a grace period far longer than the stop timeout below: open streams must end at once
    with running_trainer(
        tmp_path / "store", tmp_path / "trainer.log", "--graceful-timeout", "300"
    ) as trainer:
        base = trainer.base_url
        long_job = {"n_samples": 200, "epochs": 5000, "batch_size": 32, "seed": 1}
        job_id = httpx.post(f"{base}/v1/jobs", json=long_job, timeout=10).json()["id"]
        seen: list[str] = []

        def read_stream() -> None:
            with httpx.stream("GET", f"{base}/v1/jobs/{job_id}/events", timeout=120) as stream:
                seen.extend(stream.iter_lines())

        reader = threading.Thread(target=read_stream)
        reader.start()
        wait_for(lambda: "event: epoch" in seen, 90, "the first epoch event")
        assert stop(trainer) == 0, trainer.log()
        reader.join(timeout=patient(30))
        assert not reader.is_alive()
        assert "event: state" not in seen  # cut short, not finished: the client reconnects
        assert processes_mentioning(str(trainer.store)) == []
        record = json.loads((trainer.store / "jobs" / f"{job_id}.json").read_text())
        assert record["state"] == "QUEUED"  # back in the queue, not failed
        assert record["resumes"] == 1
        assert ModelStore(trainer.store).list_versions() == []

    with running_trainer(tmp_path / "store", tmp_path / "again.log") as again:
        events = follow_events(again.base_url, job_id)  # replays the whole history
        final = json.loads(events[-1]["data"])
        assert final["state"] == "SUCCEEDED", again.log()
        assert final["resumes"] == 1
        epochs = [json.loads(e["data"])["epoch"] for e in events if e["event"] == "epoch"]
        assert epochs == list(range(1, long_job["epochs"] + 1))  # each epoch once, in order
        assert ModelStore(again.store).list_versions() == [1]


def test_a_dead_job_runner_stops_the_service_with_exit_1(trainer: Trainer) -> None:
    runners = [
        pid
        for pid in processes_mentioning(str(trainer.store))
        if "-m\x00trainer_service.control_loop\x00" in Path(f"/proc/{pid}/cmdline").read_text()
    ]
    assert len(runners) == 1
    os.kill(runners[0], signal.SIGKILL)
    try:
        code = trainer.process.wait(timeout=patient(60))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the trainer kept running without its job runner:\n{trainer.log()}")
    assert code == 1
    assert "job runner" in trainer.log() and "exited" in trainer.log()
    assert processes_mentioning(str(trainer.store)) == []


def test_cancel_of_a_running_job_over_http(trainer: Trainer) -> None:
    base = trainer.base_url
    long_job = {"n_samples": 200, "epochs": 5000, "batch_size": 32, "seed": 2}
    job_id = httpx.post(f"{base}/v1/jobs", json=long_job, timeout=10).json()["id"]
    wait_for(
        lambda: httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()["state"] == "RUNNING",
        90,
        "the job to start",
    )
    cancelled = httpx.post(f"{base}/v1/jobs/{job_id}/cancel", timeout=30)
    # answered at once: 202 while the runner stops it (200 if it had already)
    answer = (cancelled.status_code, cancelled.json()["state"])
    assert answer in ((202, "RUNNING"), (200, "CANCELLED")), cancelled.text
    events = follow_events(base, job_id)
    assert json.loads(events[-1]["data"])["state"] == "CANCELLED"
    again = httpx.post(f"{base}/v1/jobs/{job_id}/cancel", timeout=30)
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


def test_refusals_over_real_http_token_and_chunked_bodies(tmp_path: Path) -> None:
    token = "real-http-token"  # noqa: S105 - a test token
    with running_trainer(
        tmp_path / "store",
        tmp_path / "trainer.log",
        env=service_env({"SQUARENET_API_TOKEN": token}),
    ) as trainer:
        jobs = f"{trainer.base_url}/v1/jobs"
        refused = httpx.post(jobs, json=TINY, timeout=10)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        auth = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

        def chunked(size: int) -> Iterator[bytes]:
            yield b'{"epochs": 0'
            for _ in range(size // 1024):
                yield b" " * 1024
            yield b"}"

        too_big = httpx.post(jobs, content=chunked(70 * 1024), headers=auth, timeout=10)
        assert too_big.status_code == 413
        small = httpx.post(jobs, content=chunked(4 * 1024), headers=auth, timeout=10)
        assert small.status_code == 422  # read whole, then refused for epochs 0
        assert small.json()["errors"][0]["field"] == "epochs"
        assert httpx.get(jobs, timeout=10).json() == {"jobs": []}
        assert "Traceback" not in trainer.log()


def test_two_replicas_on_one_store_answer_alike_and_cancel_across(tmp_path: Path) -> None:
    store = tmp_path / "store"
    with (
        running_trainer(store, tmp_path / "a.log") as replica_a,
        running_trainer(store, tmp_path / "b.log") as replica_b,
    ):
        long_job = {"n_samples": 200, "epochs": 5000, "batch_size": 32, "seed": 3}
        job_id = httpx.post(f"{replica_a.base_url}/v1/jobs", json=long_job, timeout=10).json()["id"]
        on_b = f"{replica_b.base_url}/v1/jobs/{job_id}"
        wait_for(
            lambda: httpx.get(on_b, timeout=10).json()["state"] == "RUNNING",
            90,
            "the job to run on one of the replicas",
        )
        cancelled = httpx.post(f"{on_b}/cancel", timeout=30)
        assert cancelled.status_code in (200, 202), (
            cancelled.text + replica_a.log() + replica_b.log()
        )
        ended = wait_for(
            lambda: (
                job if (job := httpx.get(on_b, timeout=10).json())["state"] == "CANCELLED" else None
            ),
            90,
            "the runner to stop the cancelled job",
        )
        seen_by_a = httpx.get(f"{replica_a.base_url}/v1/jobs/{job_id}", timeout=10).json()
        assert seen_by_a == ended
        assert stop(replica_a) == 0
        assert stop(replica_b) == 0
    assert processes_mentioning(str(store)) == []
    assert ModelStore(store).list_versions() == []
