"""The CLI against the real trainer and predictor processes: output and exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import patient, service_env, wait_for

from squarenet.stack import LocalStack, running_predictor, running_trainer

pytestmark = pytest.mark.slow

SQUARENET = str(Path(sys.executable).parent / "squarenet")
TINY = ["--n-samples", "200", "--epochs", "5", "--batch-size", "32", "--seed", "3"]
# long enough to be caught RUNNING: 1.6 million one-row steps (minutes); every test cancels it
LONG = ["--n-samples", "200", "--epochs", "10000", "--batch-size", "1", "--seed", "3"]


def squarenet(
    services: LocalStack, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SQUARENET, *argv], check=False, capture_output=True, text=True, timeout=180,
        env=env or services.client_env(),
    )  # fmt: skip


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def trained(services: LocalStack) -> dict[str, Any]:
    """One tiny job trained through ``squarenet --json train --wait``."""
    done = squarenet(services, "--json", "train", "--wait", *TINY)
    assert done.returncode == 0, done.stderr
    job: dict[str, Any] = json.loads(done.stdout)
    return job


def test_train_wait_shows_progress_metrics_and_version(services: LocalStack) -> None:
    done = squarenet(services, "train", "--wait", *TINY)
    assert done.returncode == 0, done.stderr
    assert "5/5" in done.stdout and "SUCCEEDED" in done.stdout
    assert "mse_in_domain" in done.stdout and "mse_out_of_domain" in done.stdout
    assert "published model version" in done.stdout


def test_json_train_wait_returns_the_finished_job(trained: dict[str, Any]) -> None:
    assert trained["state"] == "SUCCEEDED"
    assert trained["params"]["epochs"] == 5 and trained["params"]["n_samples"] == 200
    assert trained["model_version"] >= 1


def test_jobs_job_and_models_list_what_was_trained(
    services: LocalStack, trained: dict[str, Any]
) -> None:
    jobs = squarenet(services, "jobs")
    assert jobs.returncode == 0 and trained["id"] in jobs.stdout
    job = squarenet(services, "job", trained["id"])
    assert job.returncode == 0
    assert "SUCCEEDED" in job.stdout and "metrics.mse_in_domain" in job.stdout
    models = json.loads(squarenet(services, "--json", "models").stdout)["models"]
    versions = {entry["version"] for entry in models}
    assert trained["model_version"] in versions
    table = squarenet(services, "models")
    assert table.returncode == 0 and trained["id"] in table.stdout


def test_predict_marks_values_outside_the_training_domain(
    services: LocalStack, trained: dict[str, Any]
) -> None:
    version = str(trained["model_version"])
    wait_for(
        lambda: squarenet(services, "predict", "--version", version, "0").returncode == 0,
        30, f"the predictor to load version {version}",
    )  # fmt: skip
    done = squarenet(services, "--json", "predict", "--version", version, "-7", "-5", "0", "5", "7")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["version"] == trained["model_version"]
    assert [row["extrapolated"] for row in answer["predictions"]] == [
        True,
        False,
        False,
        False,
        True,
    ]
    for row in answer["predictions"]:
        assert row["x_squared"] == row["x"] ** 2
        assert row["error"] == pytest.approx(row["y"] - row["x_squared"])
    table = squarenet(services, "predict", "--version", version, "-7", "1")
    rows = [line for line in table.stdout.splitlines() if line.startswith("│")]
    assert "outside training domain" in rows[0] and "outside training domain" not in rows[1]
    assert f"answered by model version {version}" in table.stdout


def test_label_labels_and_predict_by_label(services: LocalStack, trained: dict[str, Any]) -> None:
    version = str(trained["model_version"])
    # five epochs on 200 rows land far above the floor: the gate refuses, --force moves it
    refused = squarenet(services, "label", "canary", version)
    assert refused.returncode == 4
    assert "fails its promotion gate: floor_ratio" in one_error_line(refused)
    done = squarenet(services, "label", "canary", version, "--force")
    assert done.returncode == 0, done.stderr
    first, gate = done.stdout.strip().splitlines()
    assert first == f"square: canary -> version {version}"
    assert gate.startswith("gate FAILED: floor_ratio ")
    history = squarenet(services, "--json", "history")
    (entry,) = json.loads(history.stdout)["history"]
    assert entry["label"] == "canary" and entry["forced"] is True
    assert "forced" in squarenet(services, "history").stdout
    listed = squarenet(services, "labels")
    assert f"square canary {version}" in listed.stdout.splitlines()
    as_json = json.loads(squarenet(services, "--json", "labels").stdout)
    assert as_json["labels"]["square"]["canary"] == int(version)
    wait_for(
        lambda: squarenet(services, "--json", "predict", "--label", "canary", "1").returncode == 0,
        20,
        "the predictor to see the label",
    )
    answer = json.loads(squarenet(services, "--json", "predict", "--label", "canary", "1").stdout)
    assert answer["version"] == int(version)
    unknown = squarenet(services, "label", "canary", "999")
    assert unknown.returncode == 4
    assert "no version 999" in one_error_line(unknown)
    bad = squarenet(services, "label", "Canary", version)
    assert bad.returncode == 4 and "invalid label" in one_error_line(bad)


def test_traffic_sets_shows_and_clears_the_split(
    services: LocalStack, trained: dict[str, Any]
) -> None:
    version = str(trained["model_version"])
    assert squarenet(services, "label", "blue", version, "--force").returncode == 0
    assert squarenet(services, "traffic").stdout.strip() == (
        "square: none (the served label answers)"
    )
    done = squarenet(services, "traffic", "blue=100", "--shadow", "blue=5")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "square: blue 100%; shadow blue 5%"
    shown = json.loads(squarenet(services, "--json", "traffic").stdout)
    assert shown["traffic"]["routes"] == [{"label": "blue", "weight": 100}]
    assert squarenet(services, "history").stdout.count("traffic: blue 100%") == 1
    uneven = squarenet(services, "traffic", "blue=90")
    assert uneven.returncode == 4 and "weights must sum to 100" in one_error_line(uneven)
    unknown = squarenet(services, "traffic", "green=100")
    assert unknown.returncode == 4 and "no label 'green'" in one_error_line(unknown)
    malformed = squarenet(services, "traffic", "blue:100")
    assert malformed.returncode == 2 and "expected LABEL=PERCENT" in malformed.stderr
    cleared = squarenet(services, "traffic", "--clear")
    assert cleared.returncode == 0, cleared.stderr
    assert cleared.stdout.strip() == "square: none (the served label answers)"


def test_watch_prints_the_served_model(services: LocalStack, trained: dict[str, Any]) -> None:
    done = squarenet(services, "--json", "watch", "--count", "1")
    assert done.returncode == 0, done.stderr
    model = json.loads(done.stdout)
    assert model["version"] >= trained["model_version"]
    assert model["domain"] == [-5.0, 5.0]
    line = squarenet(services, "watch", "--count", "1").stdout
    assert line.startswith("serving version") and line.count("\n") == 1


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["predict", "nan"], "INVALID_ARGUMENT"),
        (["predict", "1", "inf"], "INVALID_ARGUMENT"),
        (["predict", "--version", "999", "1"], "NOT_FOUND"),
        (["train", "--epochs", "0"], "epochs"),
        (["train", "--n-samples", "100", "--batch-size", "5000"], "batch_size"),
        (["train", "--init", "zeros"], "init"),
        (["job", "no-such-job"], "HTTP 404"),
        (["cancel", "no-such-job"], "HTTP 404"),
    ],
)
def test_rejected_requests_exit_4_with_the_reason(
    services: LocalStack, trained: dict[str, Any], argv: list[str], says: str
) -> None:
    done = squarenet(services, *argv)
    assert done.returncode == 4
    assert says in one_error_line(done)


def test_cancelling_a_finished_job_is_a_conflict(
    services: LocalStack, trained: dict[str, Any]
) -> None:
    done = squarenet(services, "cancel", trained["id"])
    assert done.returncode == 4
    assert "HTTP 409" in one_error_line(done)


def test_a_cancelled_job_ends_train_wait_with_exit_1(services: LocalStack) -> None:
    waiting = subprocess.Popen(
        [SQUARENET, "train", "--wait", *LONG], env=services.client_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        job = wait_for(lambda: running_job(services), 60, "the job to run")
        cancel = squarenet(services, "cancel", job["id"])
        assert cancel.returncode == 0 and "CANCELLED" in cancel.stdout
        _, err = waiting.communicate(timeout=patient(60))
    finally:
        waiting.kill()
    assert waiting.returncode == 1
    assert err == f"squarenet: job {job['id']} ended CANCELLED\n"


def test_ctrl_c_with_cancel_on_interrupt_cancels_the_job(services: LocalStack) -> None:
    streams = event_streams(services)
    waiting = subprocess.Popen(
        [SQUARENET, "train", "--wait", "--cancel-on-interrupt", *LONG], env=services.client_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        job = wait_for(lambda: running_job(services), 60, "the job to run")
        wait_for(lambda: event_streams(services) > streams, 60, "the follower's event stream")
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=patient(60))
    finally:
        waiting.kill()
    assert waiting.returncode == 130
    assert f"job {job['id']} is CANCELLED" in one_error_line(
        subprocess.CompletedProcess([], 130, "", err)
    )
    state = httpx.get(f"{services.trainer_url}/v1/jobs/{job['id']}", timeout=5).json()["state"]
    assert state == "CANCELLED"


def test_ctrl_c_leaves_the_job_running_and_says_how_to_cancel(services: LocalStack) -> None:
    streams = event_streams(services)
    waiting = subprocess.Popen(
        [SQUARENET, "train", "--wait", *LONG], env=services.client_env(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        job = wait_for(lambda: running_job(services), 60, "the job to run")
        wait_for(lambda: event_streams(services) > streams, 60, "the follower's event stream")
        waiting.send_signal(signal.SIGINT)
        _, err = waiting.communicate(timeout=patient(60))
        state = httpx.get(f"{services.trainer_url}/v1/jobs/{job['id']}", timeout=5).json()["state"]
        assert state == "RUNNING"
        assert squarenet(services, "cancel", job["id"]).returncode == 0
    finally:
        waiting.kill()
    assert waiting.returncode == 130
    assert err == (
        f"squarenet: interrupted: job {job['id']} keeps running; "
        f"stop it with `squarenet cancel {job['id']}`\n"
    )


def event_streams(services: LocalStack) -> float:
    """Job event streams the trainer has answered so far, by its own metric: once it rises,
    a ``--wait`` follower is reading its stream, so a Ctrl-C meets the follower."""
    text = httpx.get(f"{services.trainer_url}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "squarenet_http_requests_total"
        and sample.labels.get("route") == "/v1/jobs/<job_id>/events"
        and sample.labels.get("status") == "200"
    )


def running_job(services: LocalStack) -> dict[str, Any] | None:
    jobs = httpx.get(f"{services.trainer_url}/v1/jobs", timeout=5).json()["jobs"]
    return next((job for job in jobs if job["state"] == "RUNNING"), None)


def test_predictor_without_a_model_exits_5(tmp_path: Path, services: LocalStack) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with running_predictor(empty, tmp_path / "predictor.log", env=service_env()) as predictor:
        env = {**services.client_env(), "SQUARENET_PREDICTOR": predictor.target}
        done = squarenet(services, "predict", "1", env=env)
    assert done.returncode == 5
    assert "UNAVAILABLE" in one_error_line(done)


def test_the_token_is_sent_as_bearer_on_mutating_calls(
    tmp_path: Path, services: LocalStack
) -> None:
    store = tmp_path / "store"
    store.mkdir()
    guarded_env = service_env({"SQUARENET_API_TOKEN": "s3cret-token"})
    with running_trainer(store, tmp_path / "trainer.log", env=guarded_env) as trainer:
        env = {**services.client_env(), "SQUARENET_TRAINER_URL": trainer.base_url}
        refused = squarenet(services, "train", *TINY, env=env)
        assert refused.returncode == 4
        assert "HTTP 401" in one_error_line(refused) and "s3cret" not in refused.stderr
        listed = squarenet(services, "jobs", env=env)  # reading needs no token
        assert listed.returncode == 0
        accepted = squarenet(services, "--token", "s3cret-token", "--json", "train", *TINY, env=env)
        assert accepted.returncode == 0, accepted.stderr
        job_id = json.loads(accepted.stdout)["id"]
        cancelled = squarenet(
            services, "cancel", job_id, env={**env, "SQUARENET_API_TOKEN": "s3cret-token"}
        )
        assert cancelled.returncode in (0, 4)  # 4 when the tiny job already finished (409)
        assert "401" not in cancelled.stderr
