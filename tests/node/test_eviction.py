"""An evicted job pod on a real node (the Eviction API, as `kubectl drain`, node upgrades and
Autopilot consolidation use it): the kubelet stops the pod with SIGTERM, and the job must
not end as if its user had cancelled it."""

from __future__ import annotations

import json

import pytest
from kube import BUILD_TIMEOUT
from support import wait_for

from node.node import NAMESPACE, OVERLAY, NodeCluster, Trainer, available, pods

pytestmark = [pytest.mark.node, pytest.mark.timeout(BUILD_TIMEOUT)]

# Long enough to be caught training, short enough that a retried pod still finishes.
LONG_JOB = {"epochs": 1000, "seed": 5}
ROLL_OUT = 600  # s: the trainer's pod starting on 2 busy cores
TRAIN = 900  # s: a job's pod starts, imports TensorFlow and trains


def test_an_evicted_job_pod_is_not_a_cancel(cluster: NodeCluster, trainer: Trainer) -> None:
    cluster.kubectl("apply", "--server-side", "-k", str(OVERLAY))
    wait_for(lambda: available(cluster, "squarenet-trainer"), ROLL_OUT, "the trainer Available",
             every=1)  # fmt: skip
    job_id = trainer.submit(LONG_JOB)
    wait_for(lambda: trainer.training(job_id), TRAIN, "the job's pod to train", every=1)
    (pod,) = [
        p for p in pods(cluster, "training-job")
        if p["metadata"]["labels"].get("squarenet.io/job-id") == job_id
    ]  # fmt: skip
    name = pod["metadata"]["name"]
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": NAMESPACE},
    }
    cluster.kubectl("create", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{name}/eviction",
                    "-f", "-", stdin=json.dumps(eviction))  # fmt: skip
    job = wait_for(lambda: trainer.settled(job_id), TRAIN, "the evicted job to settle", every=1)
    # SUCCEEDED only when it published before the eviction landed (it may finish first);
    # otherwise FAILED as an interruption, worded by the finalizer (the pod's DisruptionTarget
    # condition) or by the job process (its SIGTERM): both start "interrupted: ", the words a
    # sweep retries a trial on. Never CANCELLED: nobody asked to cancel.
    assert job["state"] in ("SUCCEEDED", "FAILED"), job
    if job["state"] == "FAILED":
        assert (job["error"] or "").startswith("interrupted: "), job
        assert job["model_version"] is None, job
