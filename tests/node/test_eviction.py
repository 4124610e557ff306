"""An evicted job pod on a real node (the Eviction API, as `kubectl drain`, node upgrades and
Autopilot consolidation use it): the kubelet stops the pod with SIGTERM, the Job controller
starts another, and the job resumes from its checkpoint: never ended as if its user had
cancelled it, never trained from the start again."""

from __future__ import annotations

import json

import pytest
from kube import BUILD_TIMEOUT
from support import wait_for

from node.node import NAMESPACE, OVERLAY, NodeCluster, Trainer, available, pods

pytestmark = [pytest.mark.node, pytest.mark.timeout(BUILD_TIMEOUT)]

# Long enough to be caught training, short enough that the replacement pod still finishes.
LONG_JOB = {"epochs": 4000, "seed": 5}
ROLL_OUT = 600  # s: the trainer's pod starting on 2 busy cores
TRAIN = 900  # s: a job's pod starts, imports TensorFlow and trains


def test_an_evicted_job_pod_is_replaced_and_the_job_resumes(
    cluster: NodeCluster, trainer: Trainer
) -> None:
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
    # The Job's podFailurePolicy ignores the disrupted pod, so the Job controller starts
    # another, which resumes from the checkpoint the stopped process saved; the job ends
    # SUCCEEDED, never FAILED and never CANCELLED (nobody asked to cancel).
    assert job["state"] == "SUCCEEDED", job
    assert job["model_version"] is not None, job
    assert job["progress"]["epoch"] == LONG_JOB["epochs"], job
    replacements = [
        p["metadata"]["name"] for p in pods(cluster, "training-job")
        if p["metadata"]["labels"].get("squarenet.io/job-id") == job_id
        and p["metadata"]["name"] != name
    ]  # fmt: skip
    # none only when the job finished before the eviction landed
    for replacement in replacements:
        logged = cluster.kubectl("-n", NAMESPACE, "logs", replacement).stdout
        assert "training resumed after epoch" in logged, logged
