"""The kubernetes executor against the test control plane: real API server, real Job controller.

The trainer runs here with a kubeconfig that holds its ServiceAccount's token, so the real
authorizer applies the Role of k8s/base/rbac.yaml. Jobs' pods land on kwok's fake nodes,
which never finish them: the test plays the node for one pod at a time. It runs the pod's
container command here with the pod's environment (the store claim mapped to the local
store) and reports the pod's end through the API as a kubelet would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from kube import (
    kubectl,
    kubectl_json,
    report_pod_finished,
    service_account_kubeconfig,
    temporary_namespace,
)
from support import patient, wait_for

from squarenet.stack import Trainer, running_trainer
from squarenet.store import ModelStore
from trainer_service.runner.kubernetes import JOB_ID_LABEL, LEASE_NAME, job_name
from trainer_service.settings import JOB_MOUNT_PATH

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "k8s/base/rbac.yaml"
QUICK = {"n_samples": 200, "epochs": 3, "batch_size": 20, "seed": 1}
LONG = {"n_samples": 100_000, "epochs": 10_000, "batch_size": 1, "seed": 2}
TIMEOUT = 180.0


@dataclass
class Cluster:
    """A namespace of the control plane set up as k8s/base does for the trainer."""

    admin: Path
    namespace: str
    store: ModelStore
    kubeconfig: Path  # the trainer's ServiceAccount, bound to its Role
    tmp: Path

    def trainer(self, name: str, kubeconfig: Path | None = None) -> AbstractContextManager[Trainer]:
        """``squarenet-trainer --executor kubernetes`` on this namespace."""
        return running_trainer(
            self.store.root,
            self.tmp / f"{name}.log",
            *("--executor", "kubernetes", "--namespace", self.namespace),
            *("--kubeconfig", str(kubeconfig or self.kubeconfig)),
            *("--job-image", "squarenet-trainer:test", "--cancel-wait", "30"),
        )

    def pod(self, job_id: str) -> dict[str, Any] | None:
        """The job's pod once kwok reports it Running, else None."""
        pods = kubectl_json(
            self.admin, "-n", self.namespace, "get", "pods", "-l", f"{JOB_ID_LABEL}={job_id}"
        )["items"]
        if pods and pods[0]["status"].get("phase") == "Running":
            return dict(pods[0])
        return None

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job's Job, or None when there is none."""
        found = kubectl(
            self.admin, "-n", self.namespace, "get", "job", job_name(job_id), "-o", "json",
            check=False,
        )  # fmt: skip
        return json.loads(found.stdout) if found.returncode == 0 else None


@pytest.fixture
def cluster(control_plane: Path, tmp_path: Path) -> Iterator[Cluster]:
    """A restricted namespace with the trainer's ServiceAccount, Role and store claim."""
    store_root = tmp_path / "store"
    store_root.mkdir()
    with temporary_namespace(control_plane, "jobs") as namespace:
        kubectl(control_plane, "-n", namespace, "create", "serviceaccount", "squarenet-trainer")
        kubectl(control_plane, "-n", namespace, "apply", "-f", str(RBAC))
        volume: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"models-{namespace}"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "hostPath": {"path": str(store_root)},
            },
        }
        claim: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "squarenet-models", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "",
                "volumeName": volume["metadata"]["name"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
        kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(volume))
        kubectl(control_plane, "apply", "-f", "-", stdin=json.dumps(claim))
        kubeconfig = service_account_kubeconfig(
            control_plane, namespace, "squarenet-trainer", tmp_path / "trainer.kubeconfig"
        )
        try:
            yield Cluster(control_plane, namespace, ModelStore(store_root), kubeconfig, tmp_path)
        finally:
            kubectl(control_plane, "delete", "pv", volume["metadata"]["name"], "--wait=false")


class PlayedNode:
    """The test as the kubelet of one job's pod: runs its command, reports its end."""

    def __init__(self, cluster: Cluster, pod: dict[str, Any]) -> None:
        self.cluster = cluster
        self.name = pod["metadata"]["name"]
        container = pod["spec"]["containers"][0]
        command = [sys.executable if part == "python" else part for part in container["command"]]
        command = [str(cluster.store.root) if part == JOB_MOUNT_PATH else part for part in command]
        env = {**os.environ, **{item["name"]: item["value"] for item in container.get("env", [])}}
        self.log = (cluster.tmp / f"{self.name}.log").open("wb")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.reported = threading.Event()

    def report_when_done(self) -> int:
        """Wait for the process, then report the pod Succeeded or Failed by its exit code."""
        code = self.process.wait(timeout=TIMEOUT)
        report_pod_finished(self.cluster.admin, self.cluster.namespace, self.name, code)
        self.reported.set()
        return code

    def stop(self) -> None:
        """Kill the process (the pod was deleted)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=patient(30))
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def submit(trainer: Trainer, **params: Any) -> str:
    response = httpx.post(f"{trainer.base_url}/v1/jobs", json=params, timeout=30)
    assert response.status_code == 202, response.text + trainer.log()
    return str(response.json()["id"])


def job_state(trainer: Trainer, job_id: str) -> dict[str, Any]:
    return dict(httpx.get(f"{trainer.base_url}/v1/jobs/{job_id}", timeout=30).json())


def wait_final(trainer: Trainer, job_id: str, timeout: float = TIMEOUT) -> dict[str, Any]:
    final = ("SUCCEEDED", "FAILED", "CANCELLED")
    return wait_for(
        lambda: job if (job := job_state(trainer, job_id))["state"] in final else None,
        timeout,
        f"job {job_id} to finish",
        every=0.2,
    )


def play(cluster: Cluster, job_id: str) -> PlayedNode:
    pod = wait_for(lambda: cluster.pod(job_id), TIMEOUT, "the job's pod to run")
    return PlayedNode(cluster, pod)


def test_a_job_becomes_a_job_whose_pod_trains_publishes_and_succeeds(cluster: Cluster) -> None:
    with cluster.trainer("trainer") as trainer:
        posted = time.perf_counter()
        job_id = submit(trainer, **QUICK)
        job = wait_for(lambda: cluster.job(job_id), 60, "the Job")
        spec = job["spec"]
        assert spec["backoffLimit"] == 0
        assert spec["activeDeadlineSeconds"] == 900
        assert spec["ttlSecondsAfterFinished"] == 3600
        pod_spec = spec["template"]["spec"]
        assert pod_spec["automountServiceAccountToken"] is False
        assert pod_spec["volumes"][0]["persistentVolumeClaim"]["claimName"] == "squarenet-models"
        assert pod_spec["containers"][0]["image"] == "squarenet-trainer:test"
        node = play(cluster, job_id)
        running = time.perf_counter()
        assert node.report_when_done() == 0
        reported = time.perf_counter()
        done = wait_final(trainer, job_id)
        assert done["state"] == "SUCCEEDED", done
        print(
            f"\nkubernetes executor, POST -> SUCCEEDED {time.perf_counter() - posted:.2f} s: "
            f"POST -> pod Running {running - posted:.2f} s, the job's process (cold start, "
            f"TensorFlow import included) {reported - running:.2f} s, pod reported -> "
            f"SUCCEEDED {time.perf_counter() - reported:.2f} s"
        )
        assert done["model_version"] == 1
        assert done["progress"] == {"epoch": 3, "epochs": 3}
        assert cluster.store.verify_version("square", 1).metadata["job_id"] == job_id
        node.stop()


def test_cancel_deletes_the_job_and_ends_cancelled_without_a_version(cluster: Cluster) -> None:
    with cluster.trainer("trainer") as trainer:
        job_id = submit(trainer, **LONG)
        node = play(cluster, job_id)
        wait_for(lambda: job_state(trainer, job_id)["state"] == "RUNNING", TIMEOUT, "RUNNING")
        cancelled = httpx.post(f"{trainer.base_url}/v1/jobs/{job_id}/cancel", timeout=60)
        assert cancelled.status_code == 200, cancelled.text + trainer.log()
        assert cancelled.json()["state"] == "CANCELLED"
        wait_for(lambda: cluster.job(job_id) is None, 60, "the Job to be deleted")
        node.stop()
        assert cluster.store.list_versions() == []
        again = httpx.post(f"{trainer.base_url}/v1/jobs/{job_id}/cancel", timeout=60)
        assert again.status_code == 409


def test_a_failed_pod_fails_the_job_with_the_reason(cluster: Cluster) -> None:
    with cluster.trainer("trainer") as trainer:
        job_id = submit(trainer, **QUICK)
        pod = wait_for(lambda: cluster.pod(job_id), TIMEOUT, "the job's pod to run")
        report_pod_finished(cluster.admin, cluster.namespace, pod["metadata"]["name"], 137)
        done = wait_final(trainer, job_id)
        assert done["state"] == "FAILED"
        assert done["error"] == "the job's pod failed: Error, exit code 137"


def test_a_job_past_its_active_deadline_fails_with_the_time_limit(cluster: Cluster) -> None:
    with cluster.trainer("trainer") as trainer:
        job_id = submit(trainer, **QUICK, max_train_seconds=5)
        assert (
            wait_for(lambda: cluster.job(job_id), 60, "the Job")["spec"]["activeDeadlineSeconds"]
            == 5
        )
        done = wait_final(trainer, job_id)
        assert done["state"] == "FAILED"
        assert done["error"].startswith("time limit exceeded: the job ran longer than")
        assert cluster.store.list_versions() == []


def test_a_trainer_killed_mid_job_finds_the_job_from_its_status_after_a_restart(
    cluster: Cluster,
) -> None:
    with cluster.trainer("first") as first:
        job_id = submit(first, **{**QUICK, "epochs": 300})
        node = play(cluster, job_id)
        wait_for(lambda: job_state(first, job_id)["state"] == "RUNNING", TIMEOUT, "RUNNING")
        os.killpg(first.process.pid, signal.SIGKILL)
        first.process.wait()
    assert node.report_when_done() == 0  # the job trains on while no trainer runs
    with cluster.trainer("second") as second:
        done = wait_final(second, job_id)
        assert done["state"] == "SUCCEEDED", done
        assert done["model_version"] == 1
    node.stop()


def lease_holder(cluster: Cluster) -> str:
    lease = kubectl_json(cluster.admin, "-n", cluster.namespace, "get", "lease", LEASE_NAME)
    return str(lease["spec"]["holderIdentity"])


def test_two_trainer_replicas_elect_one_finalizer_and_the_other_takes_over(
    cluster: Cluster,
) -> None:
    with cluster.trainer("a") as a, cluster.trainer("b") as b:
        leading = wait_for(
            lambda: [t for t in (a, b) if ": leading (Lease" in t.log()], 60, "a leader"
        )
        assert len(leading) == 1
        holder = lease_holder(cluster)
        assert holder in leading[0].log()
        other = b if leading[0] is a else a
        os.killpg(leading[0].process.pid, signal.SIGKILL)
        leading[0].process.wait()
        wait_for(lambda: ": leading (Lease" in other.log(), 60, "the other replica to lead")
        assert lease_holder(cluster) != holder
        job_id = submit(other, **QUICK)
        pod = wait_for(lambda: cluster.pod(job_id), TIMEOUT, "the job's pod to run")
        report_pod_finished(cluster.admin, cluster.namespace, pod["metadata"]["name"], 1)
        assert wait_final(other, job_id)["state"] == "FAILED"


def test_a_service_account_without_the_role_gets_a_clear_error(cluster: Cluster) -> None:
    kubectl(cluster.admin, "-n", cluster.namespace, "create", "serviceaccount", "nobody")
    nobody = service_account_kubeconfig(
        cluster.admin, cluster.namespace, "nobody", cluster.tmp / "nobody.kubeconfig"
    )
    with cluster.trainer("nobody", kubeconfig=nobody) as trainer:
        refused = httpx.post(f"{trainer.base_url}/v1/jobs", json=QUICK, timeout=30)
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        problem = refused.json()
        assert problem["type"] == "urn:squarenet:problem:executor-unavailable"
        assert "needs the squarenet-trainer Role" in problem["detail"]
        assert httpx.get(f"{trainer.base_url}/v1/jobs", timeout=30).json() == {"jobs": []}
        wait_for(lambda: "may not create jobs" in trainer.log(), 60, "the finalizer's error")
        assert "Traceback" not in trainer.log()
        assert httpx.get(f"{trainer.base_url}/healthz", timeout=30).status_code == 200


def test_a_sweep_runs_its_trials_as_jobs_and_publishes_them_under_its_own_model(
    cluster: Cluster,
) -> None:
    spec = {
        "base": QUICK,
        "parameters": [
            {"name": "num_neurons", "parameterType": "int", "feasibleSpace": {"list": [2, 4]}}
        ],
        "algorithm": {"algorithmName": "grid"},
        "parallelTrialCount": 1,
    }
    with cluster.trainer("trainer") as trainer:
        created = httpx.post(f"{trainer.base_url}/v1/sweeps", json=spec, timeout=30)
        assert created.status_code == 202, created.text + trainer.log()
        sweep_id = created.json()["id"]
        trials_url = f"{trainer.base_url}/v1/sweeps/{sweep_id}/trials"
        played: list[str] = []
        for _ in range(2):  # parallelTrialCount 1: the next trial's Job comes after this one

            def next_trial() -> str | None:
                trials = httpx.get(trials_url, timeout=30).json()["trials"]
                ids = [t["jobId"] for t in trials if t["jobId"] and t["jobId"] not in played]
                return ids[0] if ids else None

            job_id = wait_for(next_trial, TIMEOUT, "the sweep to release a trial")
            assert cluster.job(job_id) is not None  # each trial is one batch/v1 Job
            node = play(cluster, job_id)
            assert node.report_when_done() == 0
            node.stop()
            assert wait_final(trainer, job_id)["sweep_id"] == sweep_id
            played.append(job_id)

        def finished() -> dict[str, Any] | None:
            sweep = httpx.get(f"{trainer.base_url}/v1/sweeps/{sweep_id}", timeout=30).json()
            return sweep if sweep["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

        sweep = wait_for(finished, TIMEOUT, "the sweep to finish")
        assert sweep["state"] == "SUCCEEDED" and sweep["trialsSucceeded"] == 2, sweep
        assert cluster.store.list_versions(f"sweep-{sweep_id}") == [1, 2]
        assert cluster.store.list_versions() == []  # the served model is untouched
