"""The traffic document over REST, and the history that records every change."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from rollouts.rollout_support import Trained
from squarenet.rollouts import HISTORY_FILE, TRAFFIC_FILE
from squarenet.store import ModelStore

TRAFFIC = "/v1/models/square/traffic"
HISTORY = "/v1/models/square/history"
SPLIT = {
    "routes": [{"label": "stable", "weight": 90}, {"label": "canary", "weight": 10}],
    "shadow": None,
}


@pytest.fixture
def labelled(client: FlaskClient, store: ModelStore, trained: Trained) -> dict[str, int]:
    """stable and canary on two good versions, candidate on the first."""
    good, other = trained.publish(store, "good"), trained.publish(store, "other")
    for label, version in (("stable", good), ("canary", other), ("candidate", good)):
        answer = client.put(f"/v1/models/square/labels/{label}", json={"version": version})
        assert answer.status_code == 200, answer.get_json()
    return {"stable": good, "canary": other}


def test_put_get_delete(client: FlaskClient, store: ModelStore, labelled: dict[str, int]) -> None:
    assert client.get(TRAFFIC).get_json() == {"model_name": "square", "traffic": None}
    document = {**SPLIT, "shadow": {"label": "candidate", "percent": 10}}
    put = client.put(TRAFFIC, json=document)
    assert put.status_code == 200
    assert put.get_json()["traffic"] == document
    assert json.loads((store.model_dir() / TRAFFIC_FILE).read_text()) == document
    assert client.get(TRAFFIC).get_json()["traffic"] == document
    removed = client.delete(TRAFFIC)
    assert removed.status_code == 200 and removed.get_json()["traffic"] is None
    assert not (store.model_dir() / TRAFFIC_FILE).exists()
    again = client.delete(TRAFFIC)
    assert again.status_code == 404 and again.mimetype == "application/problem+json"


def _routes(*pairs: tuple[Any, Any]) -> list[dict[str, Any]]:
    return [{"label": label, "weight": weight} for label, weight in pairs]


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"routes": _routes(("stable", 90), ("canary", 20))}, "routes"),
        ({"routes": _routes(("stable", 90), ("nope", 10))}, "routes.1.label"),
        ({"routes": _routes(("stable", 110), ("canary", -10))}, "routes.0.weight"),
        ({"routes": _routes(("stable", 100), ("canary", -0.0))}, "routes.1.weight"),
        ({"routes": _routes(*[(f"l{i}", 10) for i in range(9)], ("stable", 10))}, "routes"),
        (
            {"routes": _routes(("stable", 100)), "shadow": {"label": "gone", "percent": 5}},
            "shadow.label",
        ),
        (
            {"routes": _routes(("stable", 100)), "shadow": {"label": "canary", "percent": 101}},
            "shadow.percent",
        ),
        ({"routes": _routes(("stable", 100)), "shadow": {"label": "canary"}}, "shadow"),
        ({"routes": _routes(("stable", 50), ("stable", 50))}, "routes.1.label"),
        ({"routes": _routes(("Stable", 100))}, "routes.0.label"),
        ({"routes": _routes(("stable", True), ("canary", 99))}, "routes.0.weight"),
        ({"routes": [{"label": "stable"}]}, "routes.0"),
        ({"routes": []}, "routes"),
        ({"weights": {}}, "weights"),
        ([1, 2], "body"),
    ],
)
def test_a_bad_document_is_422_naming_the_field_and_nothing_is_written(
    client: FlaskClient,
    store: ModelStore,
    labelled: dict[str, int],
    document: Any,
    field: str,
) -> None:
    assert client.put(TRAFFIC, json=SPLIT).status_code == 200
    before = (store.model_dir() / TRAFFIC_FILE).read_bytes()
    history_before = (store.model_dir() / HISTORY_FILE).read_bytes()
    answer = client.put(TRAFFIC, json=document)
    assert answer.status_code == 422, answer.get_json()
    assert answer.mimetype == "application/problem+json"
    assert [error["field"] for error in answer.get_json()["errors"]] == [field]
    assert (store.model_dir() / TRAFFIC_FILE).read_bytes() == before
    assert (store.model_dir() / HISTORY_FILE).read_bytes() == history_before


def test_unknown_models_and_bodies(client: FlaskClient, store: ModelStore) -> None:
    assert client.get("/v1/models/none/traffic").status_code == 404
    assert client.put("/v1/models/BAD/traffic", json=SPLIT).status_code == 404
    assert client.get("/v1/models/none/history").status_code == 404
    store.model_dir().mkdir()
    assert client.put(TRAFFIC, data="{", content_type="application/json").status_code == 400
    empty = client.put(TRAFFIC)
    assert empty.status_code == 422 and empty.get_json()["errors"][0]["field"] == "body"


def test_history_lists_every_change_and_at_answers_the_state_then(
    client: FlaskClient, labelled: dict[str, int]
) -> None:
    good, other = labelled["stable"], labelled["canary"]
    client.put(TRAFFIC, json=SPLIT)
    client.put("/v1/models/square/labels/stable", json={"version": other})
    client.delete("/v1/models/square/labels/candidate")
    history = client.get(HISTORY).get_json()["history"]
    kinds = [(entry["kind"], entry.get("label")) for entry in history]
    assert kinds == [
        ("label", "stable"),
        ("label", "canary"),
        ("label", "candidate"),
        ("traffic", None),
        ("label", "stable"),
        ("label-removed", "candidate"),
    ]
    times = [entry["at"] for entry in history]
    assert times == sorted(times)
    # just after the traffic change: stable still on the first version, candidate still set
    then = client.get(HISTORY, query_string={"at": times[3]}).get_json()
    assert then["labels"] == {"stable": good, "canary": other, "candidate": good}
    assert then["traffic"] == SPLIT
    now = client.get(HISTORY, query_string={"at": "2999-01-01T00:00:00+00:00"}).get_json()
    assert now["labels"] == {"stable": other, "canary": other}
    before = client.get(HISTORY, query_string={"at": "2000-01-01T00:00:00Z"}).get_json()
    assert before["labels"] == {} and before["traffic"] is None


@pytest.mark.parametrize("at", ["yesterday", "2026-01-02T03:04:05", "2026-13-01T00:00:00Z", ""])
def test_a_bad_at_is_422(client: FlaskClient, store: ModelStore, at: str) -> None:
    store.model_dir().mkdir()
    answer = client.get(HISTORY, query_string={"at": at})
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["field"] == "at"


def test_the_history_names_the_token_when_the_trainer_has_one(store: ModelStore) -> None:
    from rest.rest_helpers import publish_fake_version

    from trainer_service.api.app import create_app
    from trainer_service.settings import Settings

    settings = Settings.model_validate({"model_store": store.root, "api_token": "t0ken"})
    client = create_app(settings).test_client()
    version = publish_fake_version(store)
    url = "/v1/models/square/labels/stable"
    assert client.put(url, json={"version": version, "force": True}).status_code == 401
    token = {"Authorization": "Bearer t0ken"}
    assert (
        client.put(url, json={"version": version, "force": True}, headers=token).status_code == 200
    )
    assert (
        client.put(TRAFFIC, json={"routes": [{"label": "stable", "weight": 100}]}).status_code
        == 401
    )
    assert (
        client.put(
            TRAFFIC, json={"routes": [{"label": "stable", "weight": 100}]}, headers=token
        ).status_code
        == 200
    )
    history = client.get(HISTORY).get_json()["history"]
    assert [entry["by"] for entry in history] == [{"client": "127.0.0.1", "token": "api-token"}] * 2
    assert history[0]["forced"] is True
