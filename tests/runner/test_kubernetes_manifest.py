"""The Job the kubernetes executor creates for a job: schema-valid, restricted, as the issue of
the job's settings asks (checked here without a cluster; tests/runner/test_runner_kubernetes.py
creates it on the test control plane)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import kubernetes_validate
import pytest
import yaml
from cluster.rbac import LEASE, allowed, granted

from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.kubernetes import (
    INSTALLATION_LABEL,
    JOB_ID_LABEL,
    PERMISSIONS,
    installation,
    job_manifest,
    job_name,
    lease_name,
    pending_reason,
)
from trainer_service.runner.records import Job, Progress, utc_now
from trainer_service.settings import Settings

RBAC = Path(__file__).resolve().parents[2] / "k8s/base/rbac.yaml"
JOB = Job(
    id="20261129T051500Z-3f9a1c2b",
    state=RunState.QUEUED,
    params=TrainingParams.model_validate({"epochs": 5, "max_train_seconds": 120}),
    progress=Progress(epoch=0, epochs=5),
    created_at=utc_now(),
)


@pytest.fixture
def manifest(tmp_path: Path) -> dict[str, object]:
    settings = Settings.model_validate(
        {
            "model_store": tmp_path,
            "executor": "kubernetes",
            "job_image": "registry.example/squarenet-trainer:1.2",
            "store_claim": "models-claim",
            "job_cpu": "250m",
            "job_memory": "768Mi",
            "job_ttl_seconds": 60,
        }
    )
    return job_manifest(JOB, settings)


def test_the_job_is_valid_for_the_kubernetes_schema(manifest: dict[str, object]) -> None:
    kubernetes_validate.validate(manifest, "1.37.0", strict=True)


def test_the_job_runs_once_within_the_time_limit_and_cleans_up(manifest: dict) -> None:  # type: ignore[type-arg]
    assert manifest["metadata"]["name"] == job_name(JOB.id) == "squarenet-20261129t051500z-3f9a1c2b"
    assert manifest["metadata"]["labels"][JOB_ID_LABEL] == JOB.id
    spec = manifest["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 120
    assert spec["ttlSecondsAfterFinished"] == 60
    assert spec["template"]["metadata"]["labels"][JOB_ID_LABEL] == JOB.id


def test_the_pod_is_restricted_has_no_token_and_mounts_the_store(manifest: dict) -> None:  # type: ignore[type-arg]
    pod = manifest["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/squarenet-trainer:1.2"
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"]["requests"] == {"cpu": "250m", "memory": "768Mi"}
    assert container["resources"]["limits"]["memory"] == "768Mi"
    claims = [
        v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    ]
    assert claims == ["models-claim"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "trainer_service.runner.job_process"]
    params = TrainingParams.model_validate_json(command[command.index("--params") + 1])
    assert params == JOB.params


def test_a_disrupted_or_stopped_pod_is_replaced_through_the_pod_failure_policy(
    manifest: dict,  # type: ignore[type-arg]
) -> None:
    """Not counted against backoffLimit 0: the Job controller starts another pod, which
    resumes from the job's checkpoint."""
    disrupted, stopped = manifest["spec"]["podFailurePolicy"]["rules"]
    assert disrupted == {
        "action": "Ignore",
        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
    }
    container = manifest["spec"]["template"]["spec"]["containers"][0]["name"]
    assert stopped == {
        "action": "Ignore",
        "onExitCodes": {"containerName": container, "operator": "In", "values": [143]},
    }
    assert manifest["spec"]["backoffLimit"] == 0  # any other failure fails the job


def pod(phase: str, **status: object) -> SimpleNamespace:
    """A pod as the client returns it (attributes), built here without a cluster."""
    fields = {"conditions": None, "container_statuses": None, "init_container_statuses": None}
    return SimpleNamespace(status=SimpleNamespace(phase=phase, **{**fields, **status}))


def waiting(reason: str, message: str) -> SimpleNamespace:
    state = SimpleNamespace(waiting=SimpleNamespace(reason=reason, message=message))
    return SimpleNamespace(name="train", state=state)


def test_pending_reasons_name_what_keeps_the_pod_from_starting() -> None:
    """Image pulls cannot fail on kwok's fake nodes (they pull nothing): the pods the
    finalizer would read are built here as the client returns them."""
    unscheduled = SimpleNamespace(
        type="PodScheduled",
        status="False",
        reason="Unschedulable",
        message="0/1 nodes are available: 1 Insufficient cpu.",
    )
    assert (
        pending_reason([pod("Pending", conditions=[unscheduled])])
        == "Unschedulable: 0/1 nodes are available: 1 Insufficient cpu."
    )
    pulling = waiting("ImagePullBackOff", 'Back-off pulling image "nope:1"')
    assert (
        pending_reason([pod("Pending", container_statuses=[pulling])])
        == 'ImagePullBackOff: Back-off pulling image "nope:1"'
    )
    secret = waiting("CreateContainerConfigError", 'secret "x" not found')
    assert str(pending_reason([pod("Pending", init_container_statuses=[secret])])).startswith(
        "CreateContainerConfigError"
    )
    assert str(pending_reason([])).startswith("no pod was created")
    creating = waiting("ContainerCreating", "")
    assert pending_reason([pod("Pending", container_statuses=[creating])]) is None
    assert pending_reason([pod("Running")]) is None


def test_the_role_grants_exactly_the_calls_the_executor_makes() -> None:
    """k8s/base/rbac.yaml (checked against the real authorizer by tests/cluster) and the
    permissions the finalizer checks at start are one list: no unused verb, no watch, no logs."""
    role = yaml.safe_load_all(RBAC.read_text())
    (rules,) = [doc["rules"] for doc in role if doc["kind"] == "Role"]
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted == set(PERMISSIONS) == allowed("squarenet-trainer")


def test_the_role_reads_and_renews_only_its_installations_lease(tmp_path: Path) -> None:
    """The Lease verbs that take a name are limited to the Lease the finalizer elects with
    (the default store claim's, as k8s/base sets it); `create` cannot be (the API has no name
    to check before the object exists)."""
    role = yaml.safe_load_all(RBAC.read_text())
    (rules,) = [doc["rules"] for doc in role if doc["kind"] == "Role"]
    limited = {
        (group, resource, verb, tuple(rule.get("resourceNames", ())))
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    lease = lease_name(Settings.model_validate({"model_store": tmp_path}))
    assert lease == LEASE == "squarenet-trainer-finalizer-squarenet-models"
    leases = {(verb, names) for group, resource, verb, names in limited if resource == "leases"}
    assert leases == {("create", ()), ("get", (lease,)), ("update", (lease,))}
    assert limited == granted("squarenet-trainer")


def test_the_installation_names_the_jobs_label_and_the_lease(
    manifest: dict,  # type: ignore[type-arg]
    tmp_path: Path,
) -> None:
    assert manifest["metadata"]["labels"][INSTALLATION_LABEL] == "models-claim"
    assert manifest["spec"]["template"]["metadata"]["labels"][INSTALLATION_LABEL] == "models-claim"
    long_claim = Settings.model_validate({"model_store": tmp_path, "store_claim": "c" * 100})
    assert len(installation(long_claim)) <= 63
    assert lease_name(long_claim).startswith("squarenet-trainer-finalizer-ccc")
    other = Settings.model_validate({"model_store": tmp_path, "store_claim": "other"})
    assert lease_name(other) == "squarenet-trainer-finalizer-other"


def test_with_a_kueue_queue_jobs_are_created_suspended_with_its_label(tmp_path: Path) -> None:
    plain = job_manifest(JOB, Settings.model_validate({"model_store": tmp_path}))
    assert plain["spec"]["suspend"] is False
    assert "kueue.x-k8s.io/queue-name" not in plain["metadata"]["labels"]
    queued = job_manifest(
        JOB, Settings.model_validate({"model_store": tmp_path, "queue_name": "training"})
    )
    assert queued["spec"]["suspend"] is True
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "training"
    kubernetes_validate.validate(queued, "1.37.0", strict=True)
