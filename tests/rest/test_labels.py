"""Version labels over REST: PUT/DELETE /v1/models/{model_name}/labels/{label}, GET /v1/models.

The versions here hold placeholder files that no gate can pass, so the moves are forced;
tests/rollouts/test_gates.py gates real trained versions.
"""

from __future__ import annotations

import json

import pytest
from flask.testing import FlaskClient

from rest.rest_helpers import MakeApp, break_version, publish_fake_version
from squarenet.store import LABELS_FILE, ModelStore

TOKEN = "label-token"  # noqa: S105 - a test token
LABEL_URL = "/v1/models/square/labels/{label}"


def test_put_sets_a_label_that_get_models_shows(client: FlaskClient, store: ModelStore) -> None:
    first, second = publish_fake_version(store), publish_fake_version(store)
    answer = client.put(LABEL_URL.format(label="stable"), json={"version": first, "force": True})
    assert answer.status_code == 200
    assert answer.get_json()["labels"] == {"stable": first}
    assert answer.get_json()["gate"]["passed"] is False  # placeholder files cannot run
    client.put(LABEL_URL.format(label="canary"), json={"version": second, "force": True})
    listing = client.get("/v1/models").get_json()
    assert listing["labels"] == {"square": {"stable": first, "canary": second}}
    by_version = {entry["version"]: entry["labels"] for entry in listing["models"]}
    assert by_version == {first: ["stable"], second: ["canary"]}
    on_disk = json.loads((store.model_dir() / LABELS_FILE).read_text(encoding="utf-8"))
    assert on_disk == {"stable": first, "canary": second}


def test_moving_a_label_is_one_put(client: FlaskClient, store: ModelStore) -> None:
    first, second = publish_fake_version(store), publish_fake_version(store)
    client.put(LABEL_URL.format(label="stable"), json={"version": second, "force": True})
    rolled_back = client.put(
        LABEL_URL.format(label="stable"), json={"version": first, "force": True}
    )
    assert rolled_back.get_json()["labels"] == {"stable": first}


def test_delete_removes_the_label_and_a_second_delete_is_404(
    client: FlaskClient, store: ModelStore
) -> None:
    version = publish_fake_version(store)
    client.put(LABEL_URL.format(label="canary"), json={"version": version, "force": True})
    removed = client.delete(LABEL_URL.format(label="canary"))
    assert removed.status_code == 200
    assert removed.get_json() == {"model_name": "square", "labels": {}}
    again = client.delete(LABEL_URL.format(label="canary"))
    assert again.status_code == 404
    assert again.mimetype == "application/problem+json"
    assert "no label 'canary'" in again.get_json()["detail"]


def test_an_unknown_version_is_404(client: FlaskClient, store: ModelStore) -> None:
    publish_fake_version(store)
    answer = client.put(LABEL_URL.format(label="stable"), json={"version": 7, "force": True})
    assert answer.status_code == 404
    assert answer.get_json()["detail"] == "square has no version 7"
    assert not (store.model_dir() / LABELS_FILE).exists()


def test_a_broken_version_is_404_and_says_why(client: FlaskClient, store: ModelStore) -> None:
    version = publish_fake_version(store)
    break_version(store, "square", version)
    answer = client.put(LABEL_URL.format(label="stable"), json={"version": version, "force": True})
    assert answer.status_code == 404
    assert "broken" in answer.get_json()["detail"]


def test_an_unknown_model_is_404(client: FlaskClient) -> None:
    assert (
        client.put("/v1/models/other/labels/stable", json={"version": 1, "force": True}).status_code
        == 404
    )
    assert (
        client.put("/v1/models/jobs/labels/stable", json={"version": 1, "force": True}).status_code
        == 404
    )
    assert (
        client.put("/v1/models/BAD/labels/stable", json={"version": 1, "force": True}).status_code
        == 404
    )


@pytest.mark.parametrize("label", ["Stable", "1st", "-a", "a_b", "a" * 33, "ümlaut", "a.b", "%20"])
def test_a_bad_label_is_422_naming_the_label(
    client: FlaskClient, store: ModelStore, label: str
) -> None:
    version = publish_fake_version(store)
    answer = client.put(LABEL_URL.format(label=label), json={"version": version, "force": True})
    assert answer.status_code == 422
    assert answer.get_json()["errors"][0]["field"] == "label"
    assert client.delete(LABEL_URL.format(label=label)).status_code == 422


@pytest.mark.parametrize("label", ["a", "stable", "canary-2", "a" + "b" * 31])
def test_good_labels_are_accepted(client: FlaskClient, store: ModelStore, label: str) -> None:
    version = publish_fake_version(store)
    assert (
        client.put(
            LABEL_URL.format(label=label), json={"version": version, "force": True}
        ).status_code
        == 200
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "version"),
        ({"version": "1"}, "version"),
        ({"version": 1.0}, "version"),
        ({"version": True}, "version"),
        ({"version": 0}, "version"),
        ({"version": -1}, "version"),
        ({"version": 1, "extra": 2}, "extra"),
        ([1], "body"),
    ],
)
def test_a_bad_body_is_422_naming_the_field(
    client: FlaskClient, store: ModelStore, body: object, field: str
) -> None:
    publish_fake_version(store)
    answer = client.put(LABEL_URL.format(label="stable"), json=body)
    assert answer.status_code == 422
    assert [error["field"] for error in answer.get_json()["errors"]] == [field]


def test_malformed_and_non_json_bodies(client: FlaskClient, store: ModelStore) -> None:
    publish_fake_version(store)
    url = LABEL_URL.format(label="stable")
    malformed = client.put(url, data="{", content_type="application/json")
    assert malformed.status_code == 400
    assert client.put(url, data="version=1", content_type="text/plain").status_code == 415


def test_label_changes_need_the_token_when_one_is_set(make_app: MakeApp, store: ModelStore) -> None:
    client = make_app(api_token=TOKEN).test_client()
    version = publish_fake_version(store)
    url = LABEL_URL.format(label="stable")
    assert client.put(url, json={"version": version, "force": True}).status_code == 401
    assert client.delete(url).status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert (
        client.put(url, json={"version": version, "force": True}, headers=good).status_code == 200
    )
    assert client.delete(url).status_code == 401
    assert client.get("/v1/models").get_json()["labels"] == {"square": {"stable": version}}


def test_a_malformed_labels_file_lists_no_labels(client: FlaskClient, store: ModelStore) -> None:
    publish_fake_version(store)
    (store.model_dir() / LABELS_FILE).write_text("[not json", encoding="utf-8")
    listing = client.get("/v1/models")
    assert listing.status_code == 200
    assert listing.get_json()["labels"] == {"square": {}}
