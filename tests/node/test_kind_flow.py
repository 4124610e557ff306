"""The kind quickstart on a real node, step by step as a newcomer runs it (README, "kind
quickstart"): apply the overlay, train through the trainer's port-forward, predict through
the predictor's Service, then what a cluster does to an installation: a cancel, a rolling
update under load, a trainer pod deleted mid-job, an eviction, and `kubectl delete -k`.

The tests run in file order against one installation (each step starts from where the
previous one left it). Budgets are minutes: the machine is saturated, and a job's pod
imports TensorFlow on a CPU shared with everything else."""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any

import grpc
import pytest
from kube import BUILD_TIMEOUT
from support import wait_for

from node.node import (
    NAMESPACE,
    NODE_IP,
    OVERLAY,
    NodeCluster,
    Trainer,
    available,
    node_port_service,
    pods,
)
from squarenet.cli.predictor_client import CHANNEL_OPTIONS
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

# The first test may wait for a cold build of the node's binaries and images.
pytestmark = [pytest.mark.node, pytest.mark.timeout(BUILD_TIMEOUT)]

# The article's settings with fewer epochs (100 000 samples, batch 1000, 10 neurons).
ARTICLE_JOB = {"epochs": 30, "seed": 3}
# Long enough to be caught running: a few minutes of epochs on a busy machine.
LONG_JOB = {"epochs": 3000, "seed": 4}
# inside the domain [-5, 5] (mid_range 10) and outside it
XS = [-8.0, -4.0, -2.0, 0.0, 1.0, 3.0, 5.0, 7.0]
ROLL_OUT = 600  # s: pods of images of ~500 MB starting on 2 busy cores
TRAIN = 900  # s: a job's pod starts, imports TensorFlow, trains and publishes


@pytest.fixture(scope="module")
def predictor_target(cluster: NodeCluster) -> str:
    return f"{NODE_IP}:{node_port_service(cluster)}"


def restarts(cluster: NodeCluster) -> dict[str, int]:
    return {
        p["metadata"]["name"]: sum(
            c["restartCount"] for c in p["status"].get("containerStatuses", [])
        )
        for component in ("trainer", "predictor")
        for p in pods(cluster, component)
    }


def test_apply_runs_the_trainer_for_real(cluster: NodeCluster) -> None:
    """`kubectl apply --server-side -k` of the unchanged overlay: the claim binds on the
    node, the trainer passes its real probes; the predictor runs but is not Ready before a
    model exists (its gRPC readiness says NOT_SERVING)."""
    started = time.monotonic()
    cluster.kubectl("apply", "--server-side", "-k", str(OVERLAY))
    wait_for(lambda: available(cluster, "squarenet-trainer"), ROLL_OUT, "the trainer Available",
             every=1)  # fmt: skip
    print(f"node: apply -> trainer Available in {time.monotonic() - started:.1f} s")
    claim = cluster.get("pvc", "squarenet-models")
    assert claim["status"]["phase"] == "Bound"
    assert claim["spec"]["storageClassName"] == "standard"
    (trainer_pod,) = pods(cluster, "trainer")
    assert trainer_pod["spec"]["nodeName"] == "squarenet-node"
    predictors = pods(cluster, "predictor")
    assert len(predictors) == 2
    assert all(p["status"]["phase"] == "Running" for p in predictors), predictors
    assert set(restarts(cluster).values()) == {0}
    # The API server reaches the kubelet (exec and logs stream through it).
    uid = cluster.kubectl("-n", NAMESPACE, "exec", "deployment/squarenet-trainer", "--", "id", "-u")
    assert uid.stdout.strip() == "10001"
    logs = cluster.kubectl("-n", NAMESPACE, "logs", "deployment/squarenet-trainer").stdout
    assert logs.strip(), "the trainer's log is empty"


def test_a_job_trains_in_its_pod_and_the_predictor_serves_it(
    cluster: NodeCluster, trainer: Trainer, predictor_target: str
) -> None:
    """POST /v1/jobs through the port-forward: a batch/v1 Job's pod trains as UID 10001 with
    a read-only root, publishes to the claim, the job is SUCCEEDED, both predictors become
    Ready with it, and Predict through a Service answers close to x²."""
    before = trainer.versions()
    assert before == []
    started = time.monotonic()
    job_id = trainer.submit(ARTICLE_JOB)
    job = wait_for(lambda: trainer.settled(job_id), TRAIN, "the job to settle", every=0.2)
    assert job["state"] == "SUCCEEDED", job
    print(f"node: POST -> SUCCEEDED in {time.monotonic() - started:.1f} s")
    version = job["model_version"]
    assert trainer.versions() == [version]

    (job_pod,) = [
        p for p in pods(cluster, "training-job")
        if p["metadata"]["labels"].get("squarenet.io/job-id") == job_id
    ]  # fmt: skip
    assert job_pod["status"]["phase"] == "Succeeded", job_pod["status"]
    (container,) = job_pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert job_pod["spec"]["securityContext"]["runAsUser"] == 10001
    # What the pod wrote to the claim's folder on the node is owned by the UID it ran as.
    claim = cluster.get("pvc", "squarenet-models")
    folder = cluster.volume_folder(claim["spec"]["volumeName"])
    published = [p for p in folder.rglob("*") if p.is_file()]
    assert published, f"nothing in {folder}"
    assert {p.stat().st_uid for p in published} == {10001}

    wait_for(lambda: available(cluster, "squarenet-predictor"), ROLL_OUT,
             "the predictors Ready with the model", every=1)  # fmt: skip
    print(f"node: POST -> predictors Available in {time.monotonic() - started:.1f} s")
    with grpc.insecure_channel(predictor_target) as channel:
        stub = predictor_pb2_grpc.PredictorStub(channel)  # type: ignore[no-untyped-call]
        answer = stub.Predict(predictor_pb2.PredictRequest(x=XS), timeout=30)
    assert answer.version == version
    assert list(answer.extrapolated) == [abs(x) > 5 for x in XS]
    print(f"node: Predict {dict(zip(XS, (round(y, 2) for y in answer.y), strict=True))}")
    for x, y in zip(XS, answer.y, strict=True):
        assert math.isfinite(y)
        if abs(x) <= 4:
            # 30 epochs of the article's setup fit the inside of the domain closely
            assert abs(y - x * x) < 2.0, (x, y)
    assert set(restarts(cluster).values()) == {0}


def test_a_cancelled_job_leaves_no_job_or_pod(cluster: NodeCluster, trainer: Trainer) -> None:
    before = trainer.versions()
    job_id = trainer.submit(LONG_JOB)
    wait_for(lambda: trainer.training(job_id), TRAIN, "the job's pod to train", every=1)
    started = time.monotonic()
    response = trainer.call("POST", f"/v1/jobs/{job_id}/cancel")
    assert response.status_code in (200, 202), response.text
    job = wait_for(lambda: trainer.settled(job_id), 300, "the job to settle", every=0.5)
    assert job["state"] == "CANCELLED", job
    assert job["model_version"] is None

    def gone() -> bool:
        selector = f"squarenet.io/job-id={job_id}"
        left = cluster.get("jobs,pods", "-l", selector)["items"]
        return not left

    wait_for(gone, 120, "the cancelled job's Job and pod to be deleted", every=0.5)
    print(f"node: cancel -> Job and pod gone in {time.monotonic() - started:.1f} s")
    assert trainer.versions() == before


class Calls:
    """Predict calls through the NodePort Service from two clients until stopped: one keeps
    a channel (HTTP/2 connection) for all its calls, as gRPC clients do, with the retry
    policy of squarenet's own client (a CANCELLED Predict is sent again); the other opens one
    per call, which also tests how fast kube-proxy stops sending new connections to a
    terminating pod (on this saturated machine it can take longer than the 5 s preStop
    pause: docs/deploying.md, "What a real node showed")."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.stop = threading.Event()
        self.answered = 0
        self.failures: dict[str, list[str]] = {"kept": [], "fresh": []}
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._kept, daemon=True),
            threading.Thread(target=self._fresh, daemon=True),
        ]

    def _call(self, channel: grpc.Channel, client: str) -> None:
        stub = predictor_pb2_grpc.PredictorStub(channel)  # type: ignore[no-untyped-call]
        try:
            stub.Predict(predictor_pb2.PredictRequest(x=[2.0]), timeout=30)
        except grpc.RpcError as exc:
            with self.lock:
                self.failures[client].append(
                    f"{time.strftime('%H:%M:%S')}: {exc.code()}: {exc.details()}"
                )
        else:
            with self.lock:
                self.answered += 1

    def _kept(self) -> None:
        with grpc.insecure_channel(self.target, options=CHANNEL_OPTIONS) as channel:
            while not self.stop.is_set():
                self._call(channel, "kept")

    def _fresh(self) -> None:
        while not self.stop.is_set():
            with grpc.insecure_channel(self.target) as channel:
                self._call(channel, "fresh")

    def __enter__(self) -> Calls:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=120)


def test_a_rolling_update_of_the_predictor_fails_no_call(
    cluster: NodeCluster, predictor_target: str
) -> None:
    """A new image tag (the same image, tagged on the node as `kind load` would) rolls the
    predictors one by one while calls stream through the Service: readiness, the preStop
    pause and the server's graceful stop keep every call of a connected client answered."""
    result = cluster.script("tag", "squarenet-predictor:dev", "squarenet-predictor:rollout")
    assert result.returncode == 0, result.stderr
    old = {p["metadata"]["name"] for p in pods(cluster, "predictor")}
    with Calls(predictor_target) as calls:
        wait_for(lambda: calls.answered >= 20, 120, "calls answered before the update", every=0.2)
        cluster.kubectl("-n", NAMESPACE, "set", "image", "deployment/squarenet-predictor",
                        "predictor=squarenet-predictor:rollout")  # fmt: skip

        def rolled() -> bool:
            names = {p["metadata"]["name"] for p in pods(cluster, "predictor")}
            return available(cluster, "squarenet-predictor") and not names & old

        wait_for(rolled, ROLL_OUT, "the new predictors to replace the old", every=1)
        during = calls.answered
        wait_for(lambda: calls.answered >= during + 20, 120, "calls answered after", every=0.2)
    assert calls.failures["kept"] == [], calls.failures["kept"][:5]
    print(
        f"node: rolling update: {calls.answered} calls; failed: none on the kept connection, "
        f"{len(calls.failures['fresh'])} of the calls on a new connection each "
        f"{calls.failures['fresh'][:3]}"
    )


def kubernetes_jobs(cluster: NodeCluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.get("jobs")["items"]
    return items


def test_a_trainer_pod_deleted_mid_job_settles_the_job_once(
    cluster: NodeCluster, trainer: Trainer
) -> None:
    before = trainer.versions()
    job_id = trainer.submit(LONG_JOB | {"epochs": 400})
    wait_for(lambda: trainer.training(job_id), TRAIN, "the job's pod to train", every=1)
    (old,) = pods(cluster, "trainer")
    cluster.kubectl("-n", NAMESPACE, "delete", "pod", old["metadata"]["name"], "--wait=false")

    def replaced() -> bool:
        names = {p["metadata"]["name"] for p in pods(cluster, "trainer")}
        return available(cluster, "squarenet-trainer") and old["metadata"]["name"] not in names

    wait_for(replaced, ROLL_OUT, "the Deployment to replace the trainer pod", every=1)
    job = wait_for(lambda: trainer.settled(job_id), TRAIN, "the job to settle", every=1)
    assert job["state"] in ("SUCCEEDED", "FAILED"), job
    print(f"node: trainer pod deleted mid-job -> {job['state']} {job['error'] or ''}")
    after = trainer.versions()
    if job["state"] == "SUCCEEDED":
        assert after == [*before, job["model_version"]]
    else:
        assert job["error"], job
        assert after == before
    # Listed once, and no Job of it still running.
    listed = trainer.call("GET", "/v1/jobs?limit=100").json()["jobs"]
    assert [j["id"] for j in listed].count(job_id) == 1
    wait_for(lambda: not [j for j in kubernetes_jobs(cluster) if j["status"].get("active")],
             120, "no running Job", every=1)  # fmt: skip


def test_delete_k_leaves_no_pod_or_job(cluster: NodeCluster) -> None:
    """`kubectl delete -k`: the namespace goes with every pod and Job; the volume stays as
    its reclaim policy (Retain) says, Released with the published versions in it."""
    claim = cluster.get("pvc", "squarenet-models")
    volume = claim["spec"]["volumeName"]
    cluster.kubectl("delete", "-k", str(OVERLAY), "--wait=true", timeout=600)
    left = cluster.kubectl("get", "pods,jobs", "-A", "-o", "json").stdout
    assert json.loads(left)["items"] == []

    def released() -> bool:
        pv = json.loads(cluster.kubectl("get", "pv", volume, "-o", "json").stdout)
        return bool(pv["status"]["phase"] == "Released")

    wait_for(released, 120, f"{volume} Released", every=1)
    assert any(p.is_file() for p in cluster.volume_folder(volume).rglob("*"))
