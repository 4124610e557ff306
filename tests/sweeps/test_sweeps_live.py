"""Sweeps on the real trainer (gunicorn, job runner, training processes) and the real CLI."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import wait_for

from squarenet.stack import running_trainer

pytestmark = pytest.mark.slow

SQUARENET = str(Path(sys.executable).with_name("squarenet"))
TINY_BASE = ["--base", "n_samples=200", "--base", "epochs=3", "--base", "batch_size=20",
             "--base", "seed=1"]  # fmt: skip


class ActiveTrials:
    """Watches a sweep's jobs from another thread and keeps the most seen active at once."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.most = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as http:
            while not self.stop.wait(0.2):
                jobs = http.get("/v1/jobs").json()["jobs"]
                active = [j for j in jobs if j["sweep_id"] and j["state"] in ("QUEUED", "RUNNING")]
                self.most = max(self.most, len(active))


def test_cli_sweep_waits_for_every_trial_then_promotes_the_best(tmp_path: Path) -> None:
    with running_trainer(
        tmp_path / "store", tmp_path / "trainer.log", "--max-concurrent-jobs", "2"
    ) as trainer:
        watcher = ActiveTrials(trainer.base_url)
        watcher.thread.start()
        run = subprocess.run(
            [SQUARENET, "--trainer", trainer.base_url, "sweep",
             "--vary", "num_neurons=1,4", "--vary", "mid_range=2:12:10", *TINY_BASE,
             "--parallel", "2", "--wait"],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        watcher.stop.set()
        watcher.thread.join()
        assert run.returncode == 0, run.stdout + run.stderr + trainer.log()
        assert "★" in run.stdout
        assert "SUCCEEDED: 4 succeeded" in run.stdout
        assert 1 <= watcher.most <= 2  # parallelTrialCount, never more
        http = httpx.Client(base_url=trainer.base_url, timeout=30)
        sweep = http.get("/v1/sweeps").json()["sweeps"][0]
        jobs = http.get("/v1/jobs", params={"sweep": sweep["id"]}).json()["jobs"]
        assert len(jobs) == 4
        assert {job["params"]["model_name"] for job in jobs} == {sweep["modelName"]}
        fits = http.get(f"/v1/sweeps/{sweep['id']}/plots/fits.png")
        assert fits.status_code == 200
        assert fits.content.startswith(b"\x89PNG")
        models = http.get("/v1/models").json()["models"]
        assert {m["model_name"] for m in models} == {sweep["modelName"]}  # square untouched
        promote = subprocess.run(
            [SQUARENET, "--trainer", trainer.base_url, "sweep-promote", sweep["id"]],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert promote.returncode == 0, promote.stderr
        assert "published as square version 1" in promote.stdout
        best = sweep["currentOptimalTrial"]
        square = [m for m in http.get("/v1/models").json()["models"] if m["model_name"] == "square"]
        assert square[0]["metadata"]["sweep"]["job_id"] == best["jobId"]
        assert "Traceback" not in trainer.log()


def _sweep(http: httpx.Client, sweep_id: str) -> dict[str, Any]:
    document: dict[str, Any] = http.get(f"/v1/sweeps/{sweep_id}").json()
    return document


def test_a_sweep_goes_on_after_a_trainer_restart(tmp_path: Path) -> None:
    store, body = tmp_path / "store", {
        # 2 million gradient steps a trial (about 15 s on a quiet machine with a warm job
        # process), so the trial seen running is still running when its trainer stops
        "base": {"n_samples": 2000, "epochs": 5000, "batch_size": 4, "seed": 3},
        "parameters": [{"name": "num_neurons", "parameterType": "int",
                        "feasibleSpace": {"list": [2, 3]}}],
    }  # fmt: skip
    with running_trainer(store, tmp_path / "first.log") as trainer:
        http = httpx.Client(base_url=trainer.base_url, timeout=30)
        sweep_id = http.post("/v1/sweeps", json=body).json()["id"]

        def running_trial_job() -> str | None:
            jobs = http.get("/v1/jobs", params={"sweep": sweep_id}).json()["jobs"]
            return next((job["id"] for job in jobs if job["state"] == "RUNNING"), None)

        interrupted_job = wait_for(running_trial_job, 120, "a trial to run", every=0.05)
    # a new trainer on the same store takes over
    with running_trainer(store, tmp_path / "second.log") as trainer:
        http = httpx.Client(base_url=trainer.base_url, timeout=30)
        wait_for(lambda: _sweep(http, sweep_id)["state"] == "SUCCEEDED", 400, "the sweep to end")
        trials = http.get(f"/v1/sweeps/{sweep_id}/trials").json()["trials"]
        interrupted = http.get(f"/v1/jobs/{interrupted_job}").json()
        # the restart put the trial's job back in the queue, and it resumed as the same job
        assert interrupted["state"] == "SUCCEEDED", interrupted
        assert interrupted["resumes"] == 1
        assert interrupted_job in [trial["jobId"] for trial in trials]
        assert all(trial["earlierJobIds"] == [] for trial in trials)  # no trial ran again
        assert [trial["state"] for trial in trials] == ["SUCCEEDED", "SUCCEEDED"]
        jobs = http.get("/v1/jobs", params={"sweep": sweep_id}).json()["jobs"]
        assert len(jobs) == 2
