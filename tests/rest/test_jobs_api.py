"""The job routes through Flask's test client: no job runner, so jobs stay QUEUED."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from rest.rest_helpers import TINY, MakeApp, break_version, publish_fake_version
from squarenet.store import SAVED_MODEL_FILE, TFLITE_FILE, ModelStore
from trainer_service.api.services import services
from trainer_service.params import TrainingParams
from trainer_service.rollouts.gate import GATE_FILE


def submit(client: FlaskClient, body: dict[str, object] | None = None) -> dict[str, object]:
    response = client.post("/v1/jobs", json=body if body is not None else TINY)
    assert response.status_code == 202, response.data
    document: dict[str, object] = response.get_json()
    return document


def test_submit_answers_202_with_location_and_every_effective_value(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", json=TINY)
    assert response.status_code == 202
    job = response.get_json()
    assert response.headers["Location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] == "QUEUED"
    assert job["params"] == TrainingParams.model_validate(TINY).model_dump(mode="json")
    assert job["progress"] == {"epoch": 0, "epochs": 5}
    assert job["model_version"] is None and job["finished_at"] is None


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(b"", None), (b"", "application/json"), (b"{}", "application/json"), (b"  \n", "text/plain")],
)
def test_empty_body_or_empty_object_means_the_articles_defaults(
    client: FlaskClient, body: bytes, content_type: str | None
) -> None:
    response = client.post("/v1/jobs", data=body, content_type=content_type)
    assert response.status_code == 202, response.data
    params = response.get_json()["params"]
    assert params["n_samples"] == 100_000
    assert params["epochs"] == 400
    assert params["batch_size"] == 1_000
    assert params["mid_range"] == 10.0
    assert params["num_neurons"] == 10
    assert params["validation_split"] == 0.2
    assert params["learning_rate"] == 0.001


def test_structured_json_content_type_is_accepted(client: FlaskClient) -> None:
    response = client.post("/v1/jobs", data=b'{"epochs": 3}', content_type="application/x+json")
    assert response.status_code == 202
    assert response.get_json()["params"]["epochs"] == 3


def test_get_and_list_jobs_newest_first(client: FlaskClient) -> None:
    first = submit(client)
    second = submit(client, {**TINY, "epochs": 7})
    listed = client.get("/v1/jobs").get_json()["jobs"]
    assert [job["id"] for job in listed] == [second["id"], first["id"]]
    fetched = client.get(f"/v1/jobs/{first['id']}")
    assert fetched.status_code == 200
    assert fetched.get_json() == first


def test_list_is_empty_on_a_fresh_store(client: FlaskClient) -> None:
    assert client.get("/v1/jobs").get_json() == {"jobs": []}


def test_cancel_queued_job_then_cancel_again_is_409(client: FlaskClient) -> None:
    job = submit(client)
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.get_json()["state"] == "CANCELLED"
    again = client.post(f"/v1/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    assert again.mimetype == "application/problem+json"
    assert "CANCELLED" in again.get_json()["detail"]


def test_queue_full_is_429_with_retry_after(make_app: MakeApp) -> None:
    client = make_app(max_queued_jobs=2).test_client()
    submit(client)
    submit(client)
    refused = client.post("/v1/jobs", json=TINY)
    assert refused.status_code == 429
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.get_json()["type"].endswith("queue-full")
    assert len(client.get("/v1/jobs").get_json()["jobs"]) == 2


def test_plot_of_a_job_that_has_not_drawn_it_is_404(client: FlaskClient) -> None:
    job = submit(client)
    for plot in ("loss", "fit"):
        response = client.get(f"/v1/jobs/{job['id']}/plots/{plot}.png")
        assert response.status_code == 404
        assert response.mimetype == "application/problem+json"


def test_unknown_plot_name_is_404(client: FlaskClient) -> None:
    job = submit(client)
    response = client.get(f"/v1/jobs/{job['id']}/plots/weights.png")
    assert response.status_code == 404
    assert "weights.png" in response.get_json()["detail"]


def test_plot_is_served_as_png_once_drawn(app: Flask, client: FlaskClient) -> None:
    job = submit(client)
    with app.app_context():
        folder = services().book.files.job_dir(str(job["id"]))
    folder.mkdir(parents=True, exist_ok=True)
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16
    (folder / "loss.png").write_bytes(png)
    response = client.get(f"/v1/jobs/{job['id']}/plots/loss.png")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    assert response.data == png


def test_models_lists_every_version_newest_first_and_marks_broken_ones(
    client: FlaskClient, store: ModelStore
) -> None:
    assert client.get("/v1/models").get_json() == {"models": [], "labels": {}}
    first = publish_fake_version(store)
    second = publish_fake_version(store)
    other = publish_fake_version(store, "cube")
    break_version(store, "square", first)
    models = client.get("/v1/models").get_json()["models"]
    assert [(m["model_name"], m["version"], m["status"]) for m in models] == [
        ("cube", other, "ok"),
        ("square", second, "ok"),
        ("square", first, "broken"),
    ]
    assert models[1]["metadata"]["domain"] == [-5.0, 5.0]
    assert models[1]["metadata"]["metrics"] == {"loss": 0.01}
    assert models[2]["metadata"] is None
    assert "sha256" in models[2]["reason"]


def bytes_read_by_this_process() -> int:
    """Bytes this process has read through read(2) so far (Linux /proc/self/io ``rchar``)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_models_hashes_a_version_once_and_again_only_when_a_file_changes(
    client: FlaskClient, store: ModelStore
) -> None:
    size = 16 * 1024 * 1024
    staging = store.staging_dir(tag="test")
    (staging / SAVED_MODEL_FILE).write_bytes(b"saved model placeholder")
    (staging / TFLITE_FILE).write_bytes(b"tflite placeholder")
    (staging / "variables.data").write_bytes(os.urandom(size))
    version = store.publish_version(staging, {"domain": [-5.0, 5.0]}).version
    big = store.version_dir("square", version) / "variables.data"

    def listing_reads() -> tuple[str, int]:
        before = bytes_read_by_this_process()
        (model,) = client.get("/v1/models").get_json()["models"]
        return model["status"], bytes_read_by_this_process() - before

    assert listing_reads()[1] >= size  # the first answer hashes every file
    for _ in range(3):
        status, read = listing_reads()
        assert status == "ok" and read < size // 16
    stat = big.stat()
    with big.open("r+b") as handle:  # same size, one byte different, mtime put back
        handle.write(bytes([handle.read(1)[0] ^ 0xFF]))
    os.utime(big, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    status, read = listing_reads()
    assert status == "broken" and read >= size


_TOUCHED: list[str] | None = None  # paths opened or listed while a test collects them


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _TOUCHED is not None and event in ("open", "os.scandir", "os.listdir") and args:
        _TOUCHED.append(os.fsdecode(args[0]) if isinstance(args[0], str | bytes) else "")


sys.addaudithook(_audit)  # an audit hook stays for the process: it only records when asked


def test_models_opens_no_file_of_an_unchanged_version(
    client: FlaskClient, store: ModelStore
) -> None:
    global _TOUCHED  # noqa: PLW0603 - the audit hook's switch
    versions = []
    for _ in range(4):
        staging = store.staging_dir(tag="test")
        (staging / SAVED_MODEL_FILE).write_bytes(b"saved model placeholder")
        (staging / TFLITE_FILE).write_bytes(b"tflite placeholder")
        (staging / GATE_FILE).write_text(json.dumps({"format": 1, "mse_in_domain": 0.01}))
        versions.append(store.publish_version(staging, {"domain": [-5.0, 5.0]}).version)
    first = client.get("/v1/models").get_json()["models"]
    assert [m["gate"] for m in first] == [{"measurement": {"format": 1, "mse_in_domain": 0.01}}] * 4
    folders = tuple(f"{store.version_dir('square', v)}" for v in versions)
    _TOUCHED = []
    try:
        again = client.get("/v1/models").get_json()["models"]
        touched = [path for path in _TOUCHED if path.startswith(folders)]
    finally:
        _TOUCHED = None
    assert again == first
    assert touched == []  # no walk, no read: a stat of each file the answer rests on
    break_version(store, "square", versions[0])
    statuses = {m["version"]: m["status"] for m in client.get("/v1/models").get_json()["models"]}
    assert statuses == {versions[0]: "broken", **{v: "ok" for v in versions[1:]}}


def test_list_filters_by_state_and_limit(client: FlaskClient) -> None:
    first, second, third = (submit(client)["id"] for _ in range(3))
    client.post(f"/v1/jobs/{second}/cancel")
    queued = client.get("/v1/jobs?state=QUEUED").get_json()["jobs"]
    assert [job["id"] for job in queued] == [third, first]
    cancelled = client.get("/v1/jobs", query_string={"state": "CANCELLED"}).get_json()["jobs"]
    assert [job["id"] for job in cancelled] == [second]
    newest = client.get("/v1/jobs?limit=2").get_json()["jobs"]
    assert [job["id"] for job in newest] == [third, second]


@pytest.mark.parametrize(
    ("query", "field"),
    [("state=DONE", "state"), ("limit=0", "limit"), ("limit=x", "limit"), ("limit=99999", "limit")],
)
def test_bad_list_filter_is_422_naming_it(client: FlaskClient, query: str, field: str) -> None:
    response = client.get(f"/v1/jobs?{query}")
    assert response.status_code == 422
    assert [error["field"] for error in response.get_json()["errors"]] == [field]


def test_cancel_of_a_running_job_is_202_at_once_with_the_job_as_it_is(
    app: Flask, client: FlaskClient
) -> None:
    job_id = str(submit(client)["id"])
    with app.app_context():
        book = services().book
    # what a runner does when it hands the job out; no runner is there to honour the cancel
    assert book.start(job_id) is not None
    files = book.files
    response = client.post(f"/v1/jobs/{job_id}/cancel")
    assert response.status_code == 202
    assert response.get_json()["state"] == "RUNNING"
    assert files.cancel_path(job_id).exists()  # the runner honours it when it looks
