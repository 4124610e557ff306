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
from urllib.parse import urlsplit

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

from runner.tcp_gate import TcpGate, tcp_gate
from squarenet.stack import Trainer, running_trainer
from squarenet.store import ModelStore
from trainer_service.runner.kubernetes import JOB_ID_LABEL, LEASE_PREFIX, job_name
from trainer_service.runner.records import JobFiles
from trainer_service.settings import JOB_MOUNT_PATH
from trainer_service.training.checkpoint import Checkpoint

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

    def trainer(
        self, name: str, kubeconfig: Path | None = None, max_jobs: int = 4, *flags: str
    ) -> AbstractContextManager[Trainer]:
        """``squarenet-trainer --executor kubernetes`` on this namespace."""
        return running_trainer(
            self.store.root,
            self.tmp / f"{name}.log",
            *("--executor", "kubernetes", "--namespace", self.namespace),
            *("--kubeconfig", str(kubeconfig or self.kubeconfig)),
            *("--job-image", "squarenet-trainer:test"),
            *("--max-concurrent-jobs", str(max_jobs)),
            *flags,
        )

    def pod(self, job_id: str, other_than: str | None = None) -> dict[str, Any] | None:
        """The job's pod (other than the one named) once kwok reports it Running, else None."""
        pods = kubectl_json(
            self.admin, "-n", self.namespace, "get", "pods", "-l", f"{JOB_ID_LABEL}={job_id}"
        )["items"]
        for pod in pods:
            if pod["metadata"]["name"] != other_than and pod["status"].get("phase") == "Running":
                return dict(pod)
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
        # answered at once: 202 while the finalizer has yet to record CANCELLED (200 once it has)
        answer = (cancelled.status_code, cancelled.json()["state"])
        assert answer in ((202, "RUNNING"), (200, "CANCELLED")), cancelled.text + trainer.log()
        wait_for(lambda: cluster.job(job_id) is None, 60, "the Job to be deleted")
        wait_for(lambda: job_state(trainer, job_id)["state"] == "CANCELLED", TIMEOUT, "CANCELLED")
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
    lease = kubectl_json(
        cluster.admin, "-n", cluster.namespace, "get", "lease", LEASE_PREFIX + "squarenet-models"
    )
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


def gated_kubeconfig(cluster: Cluster, gate: TcpGate) -> Path:
    """The trainer's kubeconfig with its API server reached through ``gate``."""
    config = json.loads(cluster.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{gate.port}"
    path = cluster.tmp / "gated.kubeconfig"
    path.write_text(json.dumps(config))
    path.chmod(0o600)
    return path


def api_server_address(cluster: Cluster) -> tuple[str, int]:
    config = json.loads(cluster.kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    assert server.hostname is not None and server.port is not None
    return server.hostname, server.port


def timed_post(url: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    """POST and how long the answer took (a client that gave up at 60 s would be an error)."""
    started = time.perf_counter()
    response = httpx.post(url, timeout=60, **kwargs)
    return response, time.perf_counter() - started


def assert_executor_unavailable(response: httpx.Response, trainer: Trainer) -> None:
    assert response.status_code == 503, response.text + trainer.log()
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "urn:squarenet:problem:executor-unavailable"
    assert "did not answer" in response.json()["detail"]


def test_an_api_server_stopped_or_black_holed_is_a_503_and_the_finalizer_carries_on(
    cluster: Cluster,
) -> None:
    """The API server is reached through a TCP gate the test stops and black-holes: the
    control plane itself keeps running for the other tests of the session."""
    with tcp_gate(api_server_address(cluster)) as gate:
        kubeconfig = gated_kubeconfig(cluster, gate)
        with cluster.trainer("gated", kubeconfig=kubeconfig) as trainer:
            wait_for(lambda: ": leading (Lease" in trainer.log(), 60, "the finalizer to lead")
            job_id = submit(trainer, **LONG)
            wait_for(lambda: cluster.job(job_id), 60, "the Job")

            gate.stop()
            stopped_post, stopped_seconds = timed_post(f"{trainer.base_url}/v1/jobs", json=QUICK)
            assert_executor_unavailable(stopped_post, trainer)
            cancel_url = f"{trainer.base_url}/v1/jobs/{job_id}/cancel"
            stopped_cancel, _ = timed_post(cancel_url)
            assert_executor_unavailable(stopped_cancel, trainer)
            listed = httpx.get(f"{trainer.base_url}/v1/jobs", timeout=30)
            assert listed.status_code == 200  # the list is read from the store
            assert [job["id"] for job in listed.json()["jobs"]] == [job_id]

            gate.black_hole()
            holed_post, holed_seconds = timed_post(f"{trainer.base_url}/v1/jobs", json=QUICK)
            assert_executor_unavailable(holed_post, trainer)
            print(
                f"\nAPI server stopped -> 503 in {stopped_seconds:.2f} s; "
                f"black-holed -> 503 in {holed_seconds:.2f} s"
            )
            wait_for(
                lambda: "no longer leading" in trainer.log(), 120, "the finalizer to step down"
            )

            gate.open()  # the cancel request was kept: the finalizer carries it out now
            done = wait_final(trainer, job_id)
            assert done["state"] == "CANCELLED", done
            wait_for(lambda: cluster.job(job_id) is None, 60, "the Job to be deleted")
            log = trainer.log()
            assert "Traceback" not in log
            assert log.count("finalizer: list Jobs: ") <= 2, log  # a line per problem


def evict(cluster: Cluster, pod: str) -> None:
    """Evict ``pod`` through the Eviction API, as a drain, an upgrade or a scale-down does."""
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": pod, "namespace": cluster.namespace},
    }
    path = cluster.tmp / "eviction.json"
    path.write_text(json.dumps(eviction))
    kubectl(
        cluster.admin, "create", "--raw",
        f"/api/v1/namespaces/{cluster.namespace}/pods/{pod}/eviction", "-f", str(path),
    )  # fmt: skip


def being_disrupted(cluster: Cluster, pod: str) -> bool:
    """True once the pod is being deleted with a DisruptionTarget condition (or is gone)."""
    found = kubectl(
        cluster.admin, "-n", cluster.namespace, "get", "pod", pod, "-o", "json", check=False
    )
    if found.returncode != 0:
        return True  # kwok removes a pod being deleted at once: the kubelet's part is ours
    current = json.loads(found.stdout)
    conditions = {c["type"]: c["status"] for c in current["status"].get("conditions", [])}
    return bool(current["metadata"].get("deletionTimestamp")) and (
        conditions.get("DisruptionTarget") == "True"
    )


def test_an_evicted_pod_is_replaced_and_the_job_resumes_from_its_checkpoint(
    cluster: Cluster,
) -> None:
    """kwok's node has no kubelet: the test plays it, sending SIGTERM to the job's process
    once the API server marks the pod for deletion with a DisruptionTarget condition, and
    then running the pod the Job controller starts in its place."""
    epochs = 3000
    with cluster.trainer("trainer") as trainer:
        job_id = submit(trainer, **{**QUICK, "epochs": epochs})
        node = play(cluster, job_id)
        wait_for(lambda: job_state(trainer, job_id)["progress"]["epoch"] >= 1, TIMEOUT, "epochs")
        evict(cluster, node.name)
        wait_for(lambda: being_disrupted(cluster, node.name), 60, "the pod to be evicted")
        node.stop()  # SIGTERM, as the kubelet sends it: the process saves a checkpoint
        assert node.process.returncode == 143
        still_there = kubectl(
            cluster.admin, "-n", cluster.namespace, "get", "pod", node.name, check=False
        )
        if still_there.returncode == 0:  # held by the Job's tracking finalizer until it ends
            report_pod_finished(cluster.admin, cluster.namespace, node.name, 143)
        saved = Checkpoint(JobFiles(cluster.store).checkpoint_path(job_id)).load()
        assert saved is not None and 1 <= saved.epoch < epochs
        assert job_state(trainer, job_id)["state"] == "RUNNING"  # neither FAILED nor CANCELLED
        started = wait_for(
            lambda: cluster.pod(job_id, other_than=node.name), TIMEOUT, "the replacement pod"
        )
        replacement = PlayedNode(cluster, started)
        assert replacement.report_when_done() == 0
        done = wait_final(trainer, job_id)
        assert done["state"] == "SUCCEEDED", done
        assert done["progress"] == {"epoch": epochs, "epochs": epochs}
        logged = (cluster.tmp / f"{replacement.name}.log").read_text()
        assert f"training resumed after epoch {saved.epoch} (checkpoint)" in logged
        report = JobFiles(cluster.store).read_report(job_id)
        assert [row["epoch"] for row in report.epochs] == list(range(1, epochs + 1))
        assert cluster.store.list_versions() == [1]
        assert not (cluster.store.jobs_dir / job_id / "cancel").exists()
        replacement.stop()


def test_an_unschedulable_pod_fails_the_job_with_its_reason(cluster: Cluster) -> None:
    with running_trainer(
        cluster.store.root,
        cluster.tmp / "unschedulable.log",
        *("--executor", "kubernetes", "--namespace", cluster.namespace),
        *("--kubeconfig", str(cluster.kubeconfig), "--job-image", "squarenet-trainer:test"),
        *("--job-cpu", "1000", "--job-cpu-limit", "1000", "--max-pending-seconds", "3"),
    ) as trainer:
        job_id = submit(trainer, **QUICK)

        def unschedulable() -> float | None:
            pods = kubectl_json(
                cluster.admin, "-n", cluster.namespace, "get", "pods", "-l",
                f"{JOB_ID_LABEL}={job_id}",
            )["items"]  # fmt: skip
            conditions = [c for pod in pods for c in pod["status"].get("conditions", [])]
            scheduled = [c for c in conditions if c["type"] == "PodScheduled"]
            return time.perf_counter() if scheduled and scheduled[0]["status"] == "False" else None

        seen = wait_for(unschedulable, 60, "the scheduler to find no node", every=0.1)
        done = wait_final(trainer, job_id)
        print(f"\nunschedulable pod seen -> FAILED in {time.perf_counter() - seen:.2f} s "
              "with --max-pending-seconds 3")  # fmt: skip
        assert done["state"] == "FAILED", done
        assert done["error"].startswith("never started: its pod did not start within 3 s: "), done
        assert "Unschedulable: 0/" in done["error"] and "Insufficient cpu" in done["error"], done
        wait_for(lambda: cluster.job(job_id) is None, 60, "the Job to be deleted")


def test_max_concurrent_jobs_bounds_the_jobs_queued_or_running_on_the_cluster(
    cluster: Cluster,
) -> None:
    with cluster.trainer("bounded", max_jobs=1) as trainer:
        first = submit(trainer, **QUICK)
        refused = httpx.post(f"{trainer.base_url}/v1/jobs", json=QUICK, timeout=30)
        assert refused.status_code == 429, refused.text
        assert refused.json()["type"] == "urn:squarenet:problem:queue-full"
        assert "queued or running on the cluster" in refused.json()["detail"]
        pod = wait_for(lambda: cluster.pod(first), TIMEOUT, "the first job's pod to run")
        refused = httpx.post(f"{trainer.base_url}/v1/jobs", json=QUICK, timeout=30)
        assert refused.status_code == 429, refused.text  # RUNNING counts as well
        report_pod_finished(cluster.admin, cluster.namespace, pod["metadata"]["name"], 1)
        assert wait_final(trainer, first)["state"] == "FAILED"
        second = submit(trainer, **QUICK)  # the ended job's slot is free again
        pod = wait_for(lambda: cluster.pod(second), TIMEOUT, "the second job's pod to run")
        report_pod_finished(cluster.admin, cluster.namespace, pod["metadata"]["name"], 1)
        assert wait_final(trainer, second)["state"] == "FAILED"


def test_two_installations_in_one_namespace_each_elect_and_settle_their_own(
    cluster: Cluster, tmp_path: Path
) -> None:
    other_store = tmp_path / "other-store"
    other_store.mkdir()
    # the Role reads and renews Leases by name: a second installation's is added to it, as
    # the README says for two installations sharing one ServiceAccount
    lease = {"op": "add", "path": "/rules/3/resourceNames/-",
             "value": f"{LEASE_PREFIX}other-models"}  # fmt: skip
    kubectl(cluster.admin, "-n", cluster.namespace, "patch", "role", "squarenet-trainer",
            "--type=json", "-p", json.dumps([lease]))  # fmt: skip
    other = running_trainer(
        other_store,
        cluster.tmp / "other.log",
        *("--executor", "kubernetes", "--namespace", cluster.namespace),
        *("--kubeconfig", str(cluster.kubeconfig), "--job-image", "squarenet-trainer:test"),
        "--store-claim", "other-models",
    )  # fmt: skip
    with cluster.trainer("mine") as mine, other as theirs:
        for trainer in (mine, theirs):  # one Lease each: both lead

            def leading(t: Trainer = trainer) -> bool:
                return ": leading (Lease" in t.log()

            wait_for(leading, 60, "each to lead")
        assert f"{LEASE_PREFIX}other-models" in theirs.log()
        job_id = submit(mine, **QUICK)
        labels = wait_for(lambda: cluster.job(job_id), 60, "the Job")["metadata"]["labels"]
        assert labels["squarenet.io/installation"] == "squarenet-models"
        pod = wait_for(lambda: cluster.pod(job_id), TIMEOUT, "the job's pod to run")
        report_pod_finished(cluster.admin, cluster.namespace, pod["metadata"]["name"], 1)
        assert wait_final(mine, job_id)["state"] == "FAILED"
        assert job_id not in theirs.log()
        for trainer in (mine, theirs):  # each asked about its own Lease, by name
            assert "may not" not in trainer.log(), trainer.log()


def test_deleting_the_owner_deployment_deletes_its_jobs(cluster: Cluster) -> None:
    """--job-owner: every Job is owned by the trainer's Deployment, so deleting the
    installation's Deployment alone (not its namespace) stops its training: the garbage
    collector deletes the Job, and the job ends FAILED as lost. An owner that does not exist
    (yet) is a 503 naming it, and no Job is made."""
    owner = "squarenet-trainer"
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": owner, "namespace": cluster.namespace},
        "spec": {
            "replicas": 0,  # the trainer runs here; only the object matters
            "selector": {"matchLabels": {"app": owner}},
            "template": {
                "metadata": {"labels": {"app": owner}},
                "spec": {"containers": [{"name": "trainer", "image": "squarenet-trainer:test"}]},
            },
        },
    }
    with cluster.trainer("missing", None, 4, "--job-owner", owner) as trainer:
        refused = httpx.post(f"{trainer.base_url}/v1/jobs", json=QUICK, timeout=30)
        assert refused.status_code == 503, refused.text
        assert f"Deployment {owner} (--job-owner), does not exist" in refused.json()["detail"]
    assert kubectl_json(cluster.admin, "-n", cluster.namespace, "get", "jobs")["items"] == []
    kubectl(cluster.admin, "apply", "-f", "-", stdin=json.dumps(deployment))
    uid = kubectl_json(cluster.admin, "-n", cluster.namespace, "get", "deployment", owner)[
        "metadata"
    ]["uid"]
    with cluster.trainer("owned", None, 4, "--job-owner", owner) as trainer:
        job_id = submit(trainer, **LONG)
        job = wait_for(lambda: cluster.job(job_id), 60, "the Job")
        (reference,) = job["metadata"]["ownerReferences"]
        assert (reference["kind"], reference["name"], reference["uid"]) == (
            "Deployment",
            owner,
            uid,
        )
        kubectl(cluster.admin, "-n", cluster.namespace, "delete", "deployment", owner)
        wait_for(lambda: cluster.job(job_id) is None, TIMEOUT, "the garbage collector")
        done = wait_final(trainer, job_id)
        assert done["state"] == "FAILED" and done["error"].startswith("lost"), done
