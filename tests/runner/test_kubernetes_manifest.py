"""The Job the kubernetes executor creates for a job: schema-valid, restricted, as the issue of
the job's settings asks (checked here without a cluster; tests/runner/test_runner_kubernetes.py
creates it on the test control plane)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from trainer_service.params import TrainingParams
from trainer_service.runner.kubernetes import JOB_ID_LABEL, job_manifest, job_name
from trainer_service.runner.records import Job, JobState, Progress, utc_now
from trainer_service.settings import Settings

JOB = Job(
    id="20261129T051500Z-3f9a1c2b",
    state=JobState.QUEUED,
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
