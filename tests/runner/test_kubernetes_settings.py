"""The kubernetes executor's settings fail at start with the setting named, not at submit."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from squarenet.stack import command_of
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.kubernetes import job_manifest
from trainer_service.runner.records import Job, Progress, utc_now
from trainer_service.settings import Settings, quantity


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("job_cpu", "one"),
        ("job_cpu", "-1"),
        ("job_cpu", "0"),
        ("job_memory", "1GB"),
        ("job_memory", "1 Gi"),
        ("job_cpu_limit", "100m"),  # below the default request of 1
        ("namespace", "Squarenet"),
        ("namespace", "a" * 64),
        ("store_claim", "models_claim"),
        ("job_image", "squarenet-trainer"),
        ("job_image", "registry.example:5000/squarenet-trainer:latest"),
        ("max_pending_seconds", "0"),
        ("store_sub_path", "/models"),
        ("store_sub_path", "team/../../etc"),
        ("job_owner", "Squarenet_Trainer"),
        ("job_ttl_seconds", "0"),
        (
            "queue_name",
            "Training Queue",
        ),  # the Job would be gone before the finalizer reads its end
    ],
)
def test_a_bad_kubernetes_setting_is_refused_naming_it(
    tmp_path: Path, setting: str, value: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings.model_validate({"model_store": tmp_path, setting: value})
    assert refused.value.errors()[0]["loc"] == (setting,)


def test_good_kubernetes_settings_pass_and_the_default_image_is_pinned(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "model_store": tmp_path,
            "job_cpu": "250m",
            "job_cpu_limit": "0.5",
            "job_memory": "768Mi",
            "namespace": "squarenet",
            "store_claim": "squarenet-models.v1",
            "job_image": "registry.example:5000/team/squarenet-trainer@sha256:" + "0" * 64,
        }
    )
    assert quantity(settings.job_memory) == 768 * 2**20
    assert Settings.model_validate({"model_store": tmp_path}).job_image.rsplit(":", 1)[1] not in (
        "latest",
        "",
    )
    assert Settings.model_validate({"model_store": tmp_path}).max_pending_seconds == 300


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--job-memory", "1GB"], ["job_memory", "not a Kubernetes quantity"]),
        (["--max-concurrent-jobs", "17"], ["--max-concurrent-jobs", "max_queued_jobs (16)"]),
    ],
)
def test_the_trainer_exits_2_at_start_naming_the_setting(
    tmp_path: Path, flags: list[str], named: list[str]
) -> None:
    bad = subprocess.run(
        [*command_of("squarenet-trainer"), "--model-store", str(tmp_path / "s"),
         "--executor", "kubernetes", *flags],
        capture_output=True, check=False, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert all(words in bad.stderr for words in named), bad.stderr


def test_more_job_slots_than_queue_places_is_refused_under_kubernetes_only(
    tmp_path: Path,
) -> None:
    """Under kubernetes the queue bound holds across workers and replicas only through the
    job slots (QUEUED <= max_concurrent_jobs): with more slots than queue places, racing
    submits could queue more than max_queued_jobs."""
    wide = {"model_store": tmp_path, "max_concurrent_jobs": 8, "max_queued_jobs": 4}
    with pytest.raises(ValidationError) as refused:
        Settings.model_validate({**wide, "executor": "kubernetes"})
    (error,) = refused.value.errors()
    assert error["loc"] == ("max_concurrent_jobs",)
    assert "max_queued_jobs (4)" in error["msg"], error["msg"]
    assert Settings.model_validate(wide).max_concurrent_jobs == 8  # local: one lock, no race
    even = {**wide, "executor": "kubernetes", "max_queued_jobs": 8}
    assert Settings.model_validate(even).max_concurrent_jobs == 8


def test_the_jobs_mount_the_stores_folder_on_the_claim_and_name_their_owner(
    tmp_path: Path,
) -> None:
    """A store in a folder of its claim (--store-sub-path) is that folder in every Job too,
    not the claim's root; an owner (read by the executor) becomes the Job's ownerReference."""
    job = Job(
        id="20261206T060000Z-0a1b2c3d",
        state=RunState.QUEUED,
        params=TrainingParams(),
        progress=Progress(epoch=0, epochs=TrainingParams().epochs),
        created_at=utc_now(),
    )
    settings = Settings.model_validate(
        {"model_store": tmp_path, "store_sub_path": "./team-a//models/"}
    )
    assert settings.store_sub_path == "team-a/models"
    owner = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "t", "uid": "u"}
    manifest = job_manifest(job, settings, owner)
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    (store,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    assert store == {"name": "models", "mountPath": "/models", "subPath": "team-a/models"}
    assert manifest["metadata"]["ownerReferences"] == [owner]
    at_root = job_manifest(job, Settings.model_validate({"model_store": tmp_path}))
    (container,) = at_root["spec"]["template"]["spec"]["containers"]
    assert "subPath" not in container["volumeMounts"][0]
    assert "ownerReferences" not in at_root["metadata"]
