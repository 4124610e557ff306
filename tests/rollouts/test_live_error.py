"""``GET /v1/models/{model}/live``: the trainer app asks a real predictor process for the live
exact error it measures, and adds each version's floor from the store."""

from __future__ import annotations

from typing import Any

import grpc
import jsonschema  # type: ignore[import-untyped]  # a schemathesis dependency, no stubs
import pytest
from flask.testing import FlaskClient
from predictor.predictor_harness import Launcher, Predictor
from support import wait_for

from rollouts.rollout_support import Trained
from squarenet.rollouts import parse_traffic, write_traffic
from squarenet.stack import free_port
from squarenet.store import ModelStore
from squarenet.v1 import predictor_pb2
from trainer_service.api.app import create_app
from trainer_service.rollouts.gate import floor_mse
from trainer_service.settings import Settings


def trainer(store: ModelStore, predictor: str | None) -> FlaskClient:
    """The trainer's app on ``store``, asking the predictor at ``predictor``."""
    settings: dict[str, Any] = {"model_store": store.root}
    if predictor is not None:
        settings["predictor"] = predictor
    app = create_app(Settings.model_validate(settings))
    app.testing = True
    return app.test_client()


def answer_schema(client: FlaskClient) -> jsonschema.Draft202012Validator:
    """The served OpenAPI document's ``LiveAnswer`` schema."""
    components = client.get("/openapi.json").get_json()["components"]
    return jsonschema.Draft202012Validator(
        {"$ref": "#/components/schemas/LiveAnswer", "components": components}
    )


def live_metrics(predictor: Predictor) -> dict[str, float]:
    try:
        model = predictor.stub.GetModel(predictor_pb2.GetModelRequest(), timeout=5)
    except grpc.RpcError:
        return {}
    return dict(model.metrics)


def test_the_live_error_of_every_version_and_route_against_its_floor(
    launcher: Launcher, store: ModelStore, trained: Trained
) -> None:
    good, bad = trained.publish(store, "good"), trained.publish(store, "bad")
    store.set_label("square", "stable", good)
    store.set_label("square", "canary", bad)
    predictor = launcher.start(store, "--versions", "2")
    predictor.wait_serving()
    metadata = {v: store.read_metadata("square", v) for v in (good, bad)}
    sent: dict[int, list[tuple[float, float]]] = {good: [], bad: []}
    for version, meta in metadata.items():
        lo, hi = meta["domain"]
        xs = [lo + (hi - lo) * n / 40 for n in range(41)]
        request = predictor_pb2.PredictRequest(x=xs, version=version)
        answer = predictor.stub.Predict(request, timeout=10)
        sent[version] = list(zip(xs, answer.y, strict=True))
    wait_for(
        lambda: all(f"version.{v}.live_mse_in_domain" in live_metrics(predictor) for v in sent),
        30,
        "both versions measured",
    )
    write_traffic(
        store,
        "square",
        parse_traffic(
            {"routes": [{"label": "stable", "weight": 90}, {"label": "canary", "weight": 10}]}
        ),
    )
    wait_for(lambda: "route.canary.weight" in live_metrics(predictor), 30, "the routes")

    client = trainer(store, f"127.0.0.1:{predictor.port}")
    answer = client.get("/v1/models/square/live")

    assert answer.status_code == 200, answer.get_data(as_text=True)
    live = answer.get_json()
    answer_schema(client).validate(live)
    assert live["model_name"] == "square" and live["predictor"].endswith(f":{predictor.port}")
    versions = {entry["version"]: entry for entry in live["versions"]}
    assert set(versions) == {good, bad}
    for version, pairs in sent.items():
        client_mse = sum((y - x * x) ** 2 for x, y in pairs) / len(pairs)
        assert versions[version]["live_mse_in_domain"] == pytest.approx(client_mse, rel=1e-4)
        lo, hi = metadata[version]["domain"]
        floor = floor_mse(hi - lo, metadata[version]["params"]["num_neurons"])
        assert versions[version]["floor"] == pytest.approx(floor)
        assert versions[version]["floor_ratio"] == pytest.approx(client_mse / floor, rel=1e-4)
    # the exact error tells the one-neuron network from the good one at once
    assert versions[bad]["live_mse_in_domain"] > 100 * versions[good]["live_mse_in_domain"]
    routes = {route["label"]: route for route in live["routes"]}
    assert {(r["version"], r["weight"], r["ejected"]) for r in routes.values()} == {
        (good, 90, False),
        (bad, 10, False),
    }


def test_without_a_predictor_to_ask_there_is_nothing_live_and_failures_are_problems(
    launcher: Launcher, store: ModelStore, trained: Trained
) -> None:
    trained.publish(store, "good")
    unasking = trainer(store, None)
    unasked = unasking.get("/v1/models/square/live")
    assert unasked.status_code == 200
    answer_schema(unasking).validate(unasked.get_json())
    assert unasked.get_json() == {
        "model_name": "square",
        "predictor": None,
        "serving_version": None,
        "serving_label": None,
        "versions": [],
        "routes": [],
    }
    cases: list[tuple[FlaskClient, str, int, str]] = [
        (trainer(store, f"127.0.0.1:{free_port()}"), "square", 503, "predictor-unavailable"),
        (trainer(store, "127.0.0.1:1"), "nosuchmodel", 404, "not-found"),
        (trainer(store, "127.0.0.1:1"), "..", 404, "not-found"),
    ]
    # a predictor serving another model of the store does not speak for this one
    trained.publish(store, "good", model="other")
    other = launcher.start(store, "--versions", "1", "--model-name", "other")
    other.wait_serving()
    cases.append((trainer(store, f"127.0.0.1:{other.port}"), "square", 404, "not-served"))
    for client, model, status, kind in cases:
        answer = client.get(f"/v1/models/{model}/live")
        assert answer.status_code == status, (model, answer.get_data(as_text=True))
        assert answer.mimetype == "application/problem+json"
        assert answer.get_json()["type"].endswith(kind)


@pytest.mark.parametrize("address", ["nohost", "host:", ":50051", "host:0", "host:99999"])
def test_a_bad_predictor_address_is_refused_at_start(store: ModelStore, address: str) -> None:
    with pytest.raises(ValueError, match="predictor"):
        Settings.model_validate({"model_store": store.root, "predictor": address})
