"""/healthz, /readyz, /metrics, /openapi.json and the one error handler."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # a schemathesis dependency, no stubs
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from rest.rest_helpers import TINY, MakeApp, metric_value, publish_fake_version
from squarenet.store import ModelStore
from trainer_service.api import metrics
from trainer_service.params import TrainingParams
from trainer_service.runner.local import READY_FILE


def test_healthz(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}


def test_readyz_with_a_live_job_runner_once_its_pool_is_warm(
    make_app: MakeApp, store: ModelStore
) -> None:
    """The runner's pool is played by its marker file (tests/runner start the real one)."""
    pid = os.getpid()
    client = make_app(runner_pid=pid).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503  # the pool has not said it is warm
    assert "job_processes" in response.get_json()["detail"]
    ready = store.jobs_dir / READY_FILE
    ready.parent.mkdir(parents=True, exist_ok=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    ready.write_text(str(gone.pid))  # a runner that is gone: its word does not count
    assert client.get("/readyz").status_code == 503
    ready.write_text(str(pid))
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {
        "model_store": True,
        "job_runner": True,
        "job_processes": True,
    }


def test_readyz_is_503_when_the_job_runner_is_gone(make_app: MakeApp) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    client = make_app(runner_pid=gone.pid).test_client()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert "job_runner" in response.get_json()["detail"]
    assert response.headers["Retry-After"]


def test_readyz_is_503_when_the_store_is_not_writable(make_app: MakeApp, store: ModelStore) -> None:
    client = make_app().test_client()
    shutil.rmtree(store.root)  # the volume went away under the running service
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "model_store" in response.get_json()["detail"]
    assert client.get("/healthz").status_code == 200


def test_metrics_count_requests_by_route_and_jobs_by_state(client: FlaskClient) -> None:
    before = client.get("/metrics").get_data(as_text=True)
    submitted_before = metric_value(before, "squarenet_jobs_submitted_total")
    job_id = client.post("/v1/jobs", json=TINY).get_json()["id"]
    client.post("/v1/jobs", json=TINY)
    client.post(f"/v1/jobs/{job_id}/cancel")
    client.get(f"/v1/jobs/{job_id}")
    client.get("/no/such/route/1")
    text = client.get("/metrics").get_data(as_text=True)
    assert text.startswith("# HELP")
    assert metric_value(text, "squarenet_jobs_submitted_total") == submitted_before + 2
    assert metric_value(text, "squarenet_jobs", state="QUEUED") == 1
    assert metric_value(text, "squarenet_jobs", state="CANCELLED") == 1
    assert (
        metric_value(
            text,
            "squarenet_http_requests_total",
            route="/v1/jobs/<job_id>",
            method="GET",
            status="200",
        )
        >= 1
    )
    assert (
        metric_value(
            text, "squarenet_http_requests_total", route="<unmatched>", method="GET", status="404"
        )
        >= 1
    )
    assert "/no/such/route/1" not in text
    assert (
        metric_value(
            text, "squarenet_http_request_duration_seconds_count", route="/v1/jobs", method="POST"
        )
        >= 2
    )


def counter_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of every counter family in a scrape, keyed by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for sample in family.samples
    }


def test_no_counter_goes_down_when_retention_forgets_finished_jobs(make_app: MakeApp) -> None:
    client = make_app(keep_finished_jobs=1).test_client()
    for _ in range(2):
        job_id = client.post("/v1/jobs", json=TINY).get_json()["id"]
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
    before = counter_samples(client.get("/metrics").get_data(as_text=True))
    client.post("/v1/jobs", json=TINY)  # forgets the oldest finished job
    assert len(client.get("/v1/jobs?state=CANCELLED").get_json()["jobs"]) == 1
    after = counter_samples(client.get("/metrics").get_data(as_text=True))
    lowered = {key: (value, after.get(key, 0.0)) for key, value in before.items()
               if after.get(key, 0.0) < value}  # fmt: skip
    assert lowered == {}


def test_made_up_methods_share_one_label(client: FlaskClient) -> None:
    for n in range(12):
        assert client.open("/v1/jobs", method=f"SCAN{n}").status_code == 405
    client.open("/no/such/route", method="BREW")
    families = text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))
    methods = {
        sample.labels["method"]
        for family in families
        if family.name in ("squarenet_http_requests", "squarenet_http_request_duration_seconds")
        for sample in family.samples
    }
    assert "other" in methods
    assert methods <= {*metrics.KNOWN_METHODS, metrics.OTHER_METHOD}, methods


def test_metrics_count_refused_submissions(make_app: MakeApp) -> None:
    client = make_app(max_queued_jobs=1).test_client()
    before = metric_value(
        client.get("/metrics").get_data(as_text=True), "squarenet_jobs_rejected_total"
    )
    client.post("/v1/jobs", json=TINY)
    assert client.post("/v1/jobs", json=TINY).status_code == 429
    after = metric_value(
        client.get("/metrics").get_data(as_text=True), "squarenet_jobs_rejected_total"
    )
    assert after == before + 1


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    found: dict[str, Any] = response.get_json()
    return found


def schema_validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """A validator for one component schema, its $refs resolved inside the document."""
    root = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(root)


def test_openapi_lists_every_route_of_the_app(app: Flask, document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue  # files (the dashboard's scripts), not API operations
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods or ():
            if method not in {"HEAD", "OPTIONS"}:
                routes.add((path, method.lower()))
    documented = {(path, method) for path, ops in document["paths"].items() for method in ops}
    assert routes == documented


def test_openapi_operations_are_the_routes_own_words(app: Flask, document: dict[str, Any]) -> None:
    """Generated, not written: each operation's summary is its view's docstring, each 422 is
    the problem document, and no description keeps the extension's ``<br/>`` joins."""
    views = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower()): app.view_functions[
            rule.endpoint
        ]
        for rule in app.url_map.iter_rules()
        for method in rule.methods or ()
    }
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            docstring = views[(path, method)].__doc__ or ""
            assert operation["summary"] == docstring.strip().splitlines()[0], (path, method)
            assert "<br/>" not in operation.get("description", "")
            refusal = operation["responses"].get("422")
            if refusal is not None:
                assert list(refusal["content"]) == ["application/problem+json"], (path, method)
    assert "422" not in document["paths"]["/v1/models"]["get"]["responses"]


def test_openapi_request_schema_is_the_training_params(document: dict[str, Any]) -> None:
    schema = document["components"]["schemas"]["TrainingParams"]
    assert set(schema["properties"]) == set(TrainingParams.model_fields)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["epochs"]["minimum"] == 1
    assert "required" not in schema


def test_openapi_schemas_match_real_answers(
    client: FlaskClient, store: ModelStore, document: dict[str, Any]
) -> None:
    job = client.post("/v1/jobs", json=TINY).get_json()
    schema_validator(document, "Job").validate(job)
    schema_validator(document, "JobList").validate(client.get("/v1/jobs").get_json())
    publish_fake_version(store)
    schema_validator(document, "ModelList").validate(client.get("/v1/models").get_json())
    problem = client.post("/v1/jobs", json={"epochs": 0}).get_json()
    schema_validator(document, "ProblemDetails").validate(problem)
    with pytest.raises(jsonschema.ValidationError):
        schema_validator(document, "TrainingParams").validate({"epochs": 0})


def test_failing_view_is_a_logged_500_problem_without_traceback(
    make_app: MakeApp, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app()
    app.testing = False  # testing mode would re-raise instead of answering

    def explode() -> str:
        raise RuntimeError("secret detail")

    app.add_url_rule("/explode-for-test", view_func=explode)
    response = app.test_client().get("/explode-for-test")
    assert response.status_code == 500
    assert response.mimetype == "application/problem+json"
    body = response.get_data(as_text=True)
    assert "secret" not in body and "Traceback" not in body
    assert any("secret detail" in str(r.exc_info) for r in caplog.records if r.exc_info)


def test_a_store_that_fails_under_us_is_503_with_retry_after(
    make_app: MakeApp, store: ModelStore, caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app().test_client()
    shutil.rmtree(store.root)
    store.root.write_text("the volume is gone and a file is in its place")
    response = client.post("/v1/jobs", json=TINY)
    assert response.status_code == 503
    assert response.mimetype == "application/problem+json"
    assert response.headers["Retry-After"]
    assert "Traceback" not in response.get_data(as_text=True)
    assert any(record.exc_info for record in caplog.records)


def test_openapi_request_examples_are_accepted(
    client: FlaskClient, document: dict[str, Any]
) -> None:
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
    for example in body["examples"].values():
        assert client.post("/v1/jobs", json=example["value"]).status_code == 202
