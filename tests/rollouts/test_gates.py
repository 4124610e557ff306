"""Promotion gates: a label move is judged against y = x² before it happens."""

from __future__ import annotations

import json
from typing import Any

from flask.testing import FlaskClient

from rollouts.rollout_support import Trained
from squarenet.store import LABELS_FILE, ModelStore
from trainer_service.rollouts.gate import GATE_FILE, GATES_DIR, floor_mse

STABLE = "/v1/models/square/labels/stable"


def _checks(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {check["name"]: check for check in report["checks"]}


def test_floor_is_the_papers_formula() -> None:
    assert abs(floor_mse(10.0, 10) - 0.0037945191964726148) < 1e-15
    assert floor_mse(10.0, 1) == (10 / 2) ** 4 / 180


def test_a_good_version_passes_and_the_report_shows_in_the_listing(
    client: FlaskClient, store: ModelStore, trained: Trained
) -> None:
    version = trained.publish(store, "good")
    answer = client.put(STABLE, json={"version": version})
    assert answer.status_code == 200, answer.get_json()
    report = answer.get_json()["gate"]
    assert report["passed"] is True
    checks = _checks(report)
    assert set(checks) == {"floor_ratio", "tflite_agrees", "not_worse"}
    measured = report["measurement"]
    assert measured["grid_points"] == 10_001
    assert measured["floor"] == floor_mse(10.0, 10)
    assert measured["floor_ratio"] == measured["mse_in_domain"] / measured["floor"]
    assert checks["floor_ratio"]["value"] <= checks["floor_ratio"]["limit"] == 50.0
    assert checks["tflite_agrees"]["value"] <= checks["tflite_agrees"]["limit"]
    listed = client.get("/v1/models").get_json()["models"]
    (entry,) = [e for e in listed if e["version"] == version]
    assert entry["gate"]["passed"] is True and entry["gate"]["forced"] is False


def test_the_bad_version_is_refused_for_stable_and_force_moves_it(
    client: FlaskClient, store: ModelStore, trained: Trained
) -> None:
    good, bad = trained.publish(store, "good"), trained.publish(store, "bad")
    assert client.put(STABLE, json={"version": good}).status_code == 200
    labels_before = (store.model_dir() / LABELS_FILE).read_bytes()

    refused = client.put(STABLE, json={"version": bad})
    assert refused.status_code == 409
    assert refused.mimetype == "application/problem+json"
    problem = refused.get_json()
    assert problem["type"].endswith("gate-failed") and "force" in problem["detail"]
    gate = problem["gate"]
    assert gate["passed"] is False and gate["version"] == bad and gate["incumbent"] == good
    not_worse = _checks(gate)["not_worse"]
    assert not_worse["passed"] is False
    assert not_worse["value"] > not_worse["limit"] == 2.0 * not_worse["incumbent_mse"]
    assert (store.model_dir() / LABELS_FILE).read_bytes() == labels_before
    history = client.get("/v1/models/square/history").get_json()["history"]
    assert [entry["version"] for entry in history] == [good]

    forced = client.put(STABLE, json={"version": bad, "force": True})
    assert forced.status_code == 200
    assert forced.get_json()["labels"] == {"stable": bad}
    last = client.get("/v1/models/square/history").get_json()["history"][-1]
    assert last["version"] == bad and last["previous"] == good
    assert last["forced"] is True and last["gate"]["passed"] is False
    assert last["by"]["client"] == "127.0.0.1"


def test_a_version_that_does_not_run_fails_and_says_why(
    client: FlaskClient, store: ModelStore, trained: Trained
) -> None:
    version = trained.publish(store, "good")
    folder = store.version_dir("square", version)
    # a copy whose model.tflite is not a model, sealed as valid: verification passes, the gate not
    staging = store.staging_dir(tag="test")
    for name in ("saved_model.pb", "model.tflite"):
        (staging / name).write_bytes(b"not a model")
    meta = json.loads((folder / "metadata.json").read_text())
    for key in ("files", "version", "format", "model_name"):
        meta.pop(key)
    broken_model = store.publish_version(staging, meta).version
    refused = client.put(STABLE, json={"version": broken_model})
    assert refused.status_code == 409
    (check,) = refused.get_json()["gate"]["checks"]
    assert check["name"] == "runs" and "model.tflite does not run" in check["detail"]


def test_a_version_without_a_sealed_measurement_is_measured_once_and_kept(
    client: FlaskClient, store: ModelStore, trained: Trained
) -> None:
    version = trained.publish(store, "good", sealed_gate=False)
    assert not (store.version_dir("square", version) / GATE_FILE).exists()
    answer = client.put(STABLE, json={"version": version})
    assert answer.status_code == 200, answer.get_json()
    kept = store.model_dir() / GATES_DIR / f"{version}.json"
    measured = json.loads(kept.read_text())
    assert measured == answer.get_json()["gate"]["measurement"]
    # the child measured the SavedModel itself: it agrees with the sealed measurement
    sealed = json.loads((trained.folders["good"] / GATE_FILE).read_text())
    assert measured["mse_in_domain"] == sealed["mse_in_domain"]
    assert measured["max_abs_difference"] == sealed["max_abs_difference"]


def test_thresholds_are_settings(store: ModelStore, trained: Trained) -> None:
    from trainer_service.api.app import create_app
    from trainer_service.settings import Settings

    strict = create_app(
        Settings.model_validate({"model_store": store.root, "gate_max_floor_ratio": 1.0})
    ).test_client()
    version = trained.publish(store, "good")
    refused = strict.put(STABLE, json={"version": version})
    assert refused.status_code == 409
    assert _checks(refused.get_json()["gate"])["floor_ratio"]["limit"] == 1.0
