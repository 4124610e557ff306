"""Real predictor processes following traffic.json: weights, sessions, shadow and ejection."""

from __future__ import annotations

import json
import random
import subprocess
import threading
from collections import Counter
from pathlib import Path

import grpc
import pytest
from predictor.predictor_harness import Launcher, Predictor
from support import wait_for

from rollouts.rollout_support import Trained
from squarenet.rollouts import TRAFFIC_FILE, Traffic, parse_traffic, write_traffic
from squarenet.store import ModelStore
from squarenet.v1 import predictor_pb2

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "tests" / "predictor" / "clients" / "third_party_client.py"
SESSION = "x-squarenet-session"


def traffic(stable: int, canary: int, shadow: tuple[str, int] | None = None) -> Traffic:
    document: dict[str, object] = {
        "routes": [{"label": "stable", "weight": stable}, {"label": "canary", "weight": canary}]
    }
    if shadow is not None:
        document["shadow"] = {"label": shadow[0], "percent": shadow[1]}
    return parse_traffic(document)


def split_store(store: ModelStore, trained: Trained, canary: str = "other") -> tuple[int, int]:
    """stable on the good version, canary on ``canary``; the document is written by the test."""
    stable_version = trained.publish(store, "good")
    canary_version = trained.publish(store, canary)
    store.set_label("square", "stable", stable_version)
    store.set_label("square", "canary", canary_version)
    return stable_version, canary_version


def routes_loaded(predictor: Predictor, **weights: int) -> bool:
    """True once GetModel shows the routes with these weights (the plan is in place)."""
    try:
        metrics = predictor.stub.GetModel(predictor_pb2.GetModelRequest(), timeout=5).metrics
    except grpc.RpcError:
        return False
    return all(metrics.get(f"route.{label}.weight") == w for label, w in weights.items())


def call(
    predictor: Predictor,
    x: float = 1.0,
    session: str = "",
    version: int = 0,
    version_label: str = "",
) -> int:
    metadata = ((SESSION, session),) if session else None
    request = predictor_pb2.PredictRequest(x=[x], version=version, version_label=version_label)
    answer = predictor.stub.Predict(request, timeout=10, metadata=metadata)
    return int(answer.version)


def start(launcher: Launcher, store: ModelStore, *args: str) -> Predictor:
    predictor = launcher.start(store, "--versions", "1", *args)
    predictor.wait_serving()
    return predictor


def test_weights_sessions_and_named_versions(
    launcher: Launcher, store: ModelStore, trained: Trained
) -> None:
    stable, canary = split_store(store, trained)
    write_traffic(store, "square", traffic(80, 20))
    predictor = start(launcher, store)
    wait_for(lambda: routes_loaded(predictor, stable=80, canary=20), 20, "the routes")
    rng = random.Random(1)
    seen = Counter(call(predictor, rng.uniform(-5, 5)) for _ in range(2000))
    assert set(seen) == {stable, canary}
    assert 0.15 <= seen[canary] / 2000 <= 0.25, seen
    # one session key: one route, every time; many keys: both routes
    sticky = Counter(call(predictor, session="user-7") for _ in range(200))
    assert len(sticky) == 1
    by_key = Counter(call(predictor, session=f"user-{n}") for n in range(60))
    assert set(by_key) == {stable, canary}
    # naming a version or a label bypasses the split (and is not counted as routed)
    assert {call(predictor, version_label="canary") for _ in range(50)} == {canary}
    assert {call(predictor, version=stable) for _ in range(50)} == {stable}
    routed = seen + sticky + by_key
    for label, version in (("stable", stable), ("canary", canary)):
        counted = predictor.metric(
            "squarenet_predictor_route_calls_total", route=label, version=str(version)
        )
        assert counted == routed[version]


def test_the_document_is_followed_removed_and_read_again_after_a_restart(
    launcher: Launcher, store: ModelStore, trained: Trained
) -> None:
    stable, canary = split_store(store, trained)
    predictor = start(launcher, store, "--serve-label", "stable")
    assert {call(predictor) for _ in range(50)} == {stable}
    write_traffic(store, "square", traffic(0, 100))
    wait_for(lambda: call(predictor) == canary, 20, "the split to move every call to canary")
    assert {call(predictor) for _ in range(50)} == {canary}
    # a torn write is never read: only a whole document is renamed into place, and a
    # malformed traffic.json is refused while the last good one goes on serving
    (store.model_dir() / f".{TRAFFIC_FILE}.half.tmp").write_text('{"routes": [{"lab')
    (store.model_dir() / TRAFFIC_FILE).write_text('{"routes": [{"label": "stable", "wei')
    wait_for(
        lambda: "cannot read the traffic document" in predictor.log(), 20, "the refusal logged"
    )
    assert {call(predictor) for _ in range(50)} == {canary}
    write_traffic(store, "square", traffic(0, 100))
    predictor.terminate()
    again = start(launcher, store, "--serve-label", "stable")
    wait_for(lambda: routes_loaded(again, canary=100), 20, "the routes after the restart")
    assert {call(again) for _ in range(50)} == {canary}
    write_traffic(store, "square", None)
    wait_for(lambda: call(again) == stable, 20, "the served label back")
    assert {call(again) for _ in range(50)} == {stable}


def test_every_answer_is_measured_against_the_truth_without_a_traffic_document(
    launcher: Launcher, store: ModelStore, trained: Trained
) -> None:
    """No traffic.json: default and pinned calls are measured too (route ``direct``), and
    GetModel's live MSE is exactly what the client computes from the same answers."""
    version = trained.publish(store, "good")
    predictor = start(launcher, store)
    model = predictor.stub.GetModel(predictor_pb2.GetModelRequest(), timeout=10)
    inside = [
        model.domain_min + (model.domain_max - model.domain_min) * n / 100 for n in range(101)
    ]
    outside = [model.domain_max + 1.0, model.domain_min - 2.0]
    bulk = predictor.stub.Predict(predictor_pb2.PredictRequest(x=inside + outside), timeout=10)
    pinned = [
        predictor.stub.Predict(predictor_pb2.PredictRequest(x=[x], version=version), timeout=10)
        for x in inside[:10]
    ]
    answers = list(zip(inside + outside, bulk.y, strict=True))
    answers += [(x, answer.y[0]) for x, answer in zip(inside[:10], pinned, strict=True)]
    in_errors = [abs(y - x * x) for x, y in answers if model.domain_min <= x <= model.domain_max]
    labels = {"route": "direct", "version": str(version)}
    metric = predictor.metric
    # answers are measured after they are sent, on the backlog's thread: wait for all of them
    wait_for(
        lambda: (
            metric("squarenet_predictor_abs_error_count", domain="in", **labels) == len(in_errors)
        ),
        30,
        "every answer measured",
    )
    assert metric("squarenet_predictor_abs_error_count", domain="out", **labels) == len(outside)
    assert metric("squarenet_predictor_abs_error_sum", domain="in", **labels) == pytest.approx(
        sum(in_errors), rel=1e-6
    )
    live = predictor.stub.GetModel(predictor_pb2.GetModelRequest(), timeout=10).metrics
    assert live[f"version.{version}.live_mse_in_domain"] == pytest.approx(
        sum(e * e for e in in_errors) / len(in_errors), rel=1e-6
    )


def test_shadow_answers_are_measured_and_never_returned(
    launcher: Launcher, store: ModelStore, trained: Trained
) -> None:
    stable, canary = split_store(store, trained)
    write_traffic(store, "square", traffic(100, 0, shadow=("canary", 100)))
    predictor = start(launcher, store)
    wait_for(lambda: routes_loaded(predictor, stable=100), 20, "the routes")
    calls = 300
    assert {call(predictor, x=0.5 * (n % 19) - 4.5) for n in range(calls)} == {stable}
    # the shadow runs after the answer, on its own thread: wait until it has counted all
    wait_for(
        lambda: (
            predictor.metric(
                "squarenet_predictor_abs_error_count", route="shadow", version=str(canary)
            )
            == calls
        ),
        30,
        "every shadow call measured",
    )
    routed = predictor.metric(
        "squarenet_predictor_abs_error_count", route="stable", version=str(stable), domain="in"
    )
    assert routed == calls
    assert predictor.metric("squarenet_predictor_shadow_dropped_total") == 0
    assert predictor.metric("squarenet_predictor_unmeasured_total") == 0


def test_a_bad_canary_is_ejected_and_no_call_fails(
    launcher: Launcher, store: ModelStore, trained: Trained
) -> None:
    stable, bad = split_store(store, trained, canary="bad")
    write_traffic(store, "square", traffic(80, 20))
    predictor = start(launcher, store)
    wait_for(lambda: routes_loaded(predictor, stable=80, canary=20), 20, "the routes")
    watched: list[predictor_pb2.Model] = []
    stream = predictor.stub.WatchModel(predictor_pb2.WatchModelRequest(), timeout=120)

    def watch() -> None:
        try:
            for model in stream:
                watched.append(model)
        except grpc.RpcError:
            pass  # cancelled at the end of the test

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    rng = random.Random(2)
    answered = [call(predictor, rng.uniform(-5, 5)) for _ in range(500)]  # raises if one fails
    assert bad in answered[:400], "the canary never got a call"
    assert set(answered[400:]) == {stable}, "still routed to the bad canary after 400 calls"
    assert predictor.metric("squarenet_predictor_route_ejected", route="canary") == 1
    assert predictor.metric("squarenet_predictor_route_ejected", route="stable") == 0
    assert "ejected route=canary" in predictor.log()
    wait_for(
        lambda: any(m.metrics.get("route.canary.ejected") == 1 for m in watched),
        20,
        "WatchModel to report the ejection",
    )
    stream.cancel()
    # a new document is a new judgement: the canary gets traffic again
    write_traffic(store, "square", traffic(50, 50))
    wait_for(lambda: routes_loaded(predictor, stable=50, canary=50), 20, "the new routes")
    assert predictor.metric("squarenet_predictor_route_ejected", route="canary") == 0
    # fewer calls than the ejection's minimum (50 a route), so the bad canary cannot be
    # judged again before it is seen to get traffic
    assert bad in {call(predictor) for _ in range(40)}


@pytest.mark.parametrize("protocol", ["triton", "tfserving"])
def test_third_party_clients_see_the_split_and_sessions(
    launcher: Launcher, store: ModelStore, trained: Trained, protocol: str
) -> None:
    stable, canary = split_store(store, trained)
    write_traffic(store, "square", traffic(50, 50))
    predictor = start(launcher, store)
    wait_for(lambda: routes_loaded(predictor, stable=50, canary=50), 20, "the routes")
    python = _client_python(protocol)

    def split(calls: int, session: str = "") -> dict[str, int]:
        argv = [python, str(CLIENT), "split", protocol, f"127.0.0.1:{predictor.port}"]
        run = subprocess.run(
            [*argv, str(calls), *([session] if session else [])],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        counts: dict[str, int] = json.loads(run.stdout.strip().splitlines()[-1])
        return counts

    spread = split(200)
    assert set(spread) == {str(stable), str(canary)}, spread
    assert min(spread.values()) >= 60, spread  # 50/50 over 200 calls
    sticky = split(100, session="user-7")
    assert len(sticky) == 1 and sum(sticky.values()) == 100, sticky


def _client_python(which: str) -> str:
    run = subprocess.run(
        ["bash", str(ROOT / "scripts/client-venv.sh"), which],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.strip().splitlines()[-1]
