"""RoutePlan and Planner in-process: what real predictors cannot be made to show on demand.

A runtime that fails on request stands in for a loaded model here (a mock, because a real
LiteRT model never fails a call on cue); every other piece is the predictor's own.
"""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import REGISTRY
from support import wait_for

from predictor_service.registry import ServedModel, Snapshot
from predictor_service.traffic import (
    Answer,
    EjectionPolicy,
    LiveWindow,
    MeasuredRuntime,
    Planner,
    RoutePlan,
    measure,
    routed,
    traffic_summary,
)
from squarenet.rollouts import Traffic, parse_traffic


class SquareRuntime:
    """Answers x² plus ``error`` (0: exact), or raises while ``failing``."""

    name = "test"

    def __init__(self, error: float = 0.0) -> None:
        self.error = error
        self.failing = False

    def predict(self, x: object) -> np.ndarray:
        if self.failing:
            raise RuntimeError("the model failed")
        values = np.asarray(x, dtype=np.float64)
        return (values * values + self.error).astype(np.float32)


def model(version: int, runtime: SquareRuntime) -> ServedModel:
    return ServedModel(version, -5.0, 5.0, "", "", {}, runtime, ())


def plan_for(
    stable: ServedModel, canary: ServedModel, weights: tuple[int, int], **policy: int
) -> tuple[Planner, RoutePlan, list[bool], Traffic, dict[str, int]]:
    ejected: list[bool] = []
    planner = Planner(EjectionPolicy(**policy), on_eject=lambda: ejected.append(True))
    document = parse_traffic(
        {"routes": [{"label": "stable", "weight": weights[0]},
                    {"label": "canary", "weight": weights[1]}]}
    )  # fmt: skip
    labels = {"stable": stable.version, "canary": canary.version}
    plan = planner.plan(document, labels, [canary, stable])
    assert plan is not None
    return planner, plan, ejected, document, labels


def test_failing_calls_eject_the_route_and_the_caller_sees_the_failure() -> None:
    stable, canary_runtime = model(1, SquareRuntime()), SquareRuntime()
    canary = model(2, canary_runtime)
    _planner, plan, ejected, _doc, _labels = plan_for(stable, canary, (50, 50), failures=3)
    canary_runtime.failing = True
    routed_canary = plan.routes[1].model
    for _ in range(3):
        with pytest.raises(RuntimeError):
            routed_canary.runtime.predict([1.0])
    assert plan.routes[1].ejected and ejected == [True]
    assert "3 calls in a row failed" in plan.routes[1].reason
    # every call now goes to the primary route (stable, its model wrapped for measuring)
    snapshot = Snapshot(models=(stable, canary), default=canary, traffic=plan)
    assert {routed(snapshot).version for _ in range(50)} == {1}  # type: ignore[union-attr]


def test_a_success_resets_the_failure_count() -> None:
    stable, canary_runtime = model(1, SquareRuntime()), SquareRuntime()
    _planner, plan, ejected, _doc, _labels = plan_for(
        stable, model(2, canary_runtime), (50, 50), failures=2
    )
    runtime = plan.routes[1].model.runtime
    for _ in range(5):
        canary_runtime.failing = True
        with pytest.raises(RuntimeError):
            runtime.predict([1.0])
        canary_runtime.failing = False
        runtime.predict([1.0])
    assert not plan.routes[1].ejected and ejected == []


def test_the_primary_is_never_ejected_and_a_close_canary_stays() -> None:
    stable = model(1, SquareRuntime(error=0.1))
    canary = model(2, SquareRuntime(error=0.2))  # 4 times the MSE: under the factor 10
    _planner, plan, ejected, _doc, _labels = plan_for(stable, canary, (80, 20), min_calls=5)
    for _ in range(20):
        plan.routes[0].model.runtime.predict([1.0, 2.0])
        plan.routes[1].model.runtime.predict([1.0, 2.0])
    assert ejected == []
    assert plan.routes[1].live_mse == pytest.approx(0.04, rel=1e-5)
    assert plan.summary()["route.canary.live_mse_in_domain"] == pytest.approx(0.04, rel=1e-5)


def test_the_same_document_keeps_the_plan_and_a_new_one_resets_ejection() -> None:
    stable, canary = model(1, SquareRuntime()), model(2, SquareRuntime(error=5.0))
    planner, plan, _ejected, document, labels = plan_for(stable, canary, (50, 50), min_calls=2)
    for _ in range(5):
        plan.routes[0].model.runtime.predict([1.0])
        plan.routes[1].model.runtime.predict([1.0])
    assert plan.routes[1].ejected
    assert planner.plan(document, labels, [canary, stable]) is plan
    changed = parse_traffic(
        {"routes": [{"label": "stable", "weight": 60}, {"label": "canary", "weight": 40}]}
    )
    fresh = planner.plan(changed, labels, [canary, stable])
    assert fresh is not None and fresh is not plan and not fresh.routes[1].ejected
    assert planner.plan(None, labels, [canary, stable]) is None


def test_routes_without_a_loaded_version_are_left_out() -> None:
    stable = model(1, SquareRuntime())
    planner = Planner()
    document = parse_traffic(
        {"routes": [{"label": "stable", "weight": 10}, {"label": "canary", "weight": 90}]}
    )
    plan = planner.plan(document, {"stable": 1, "canary": 7}, [stable])
    assert plan is not None and [route.label for route in plan.routes] == ["stable"]
    snapshot = Snapshot(models=(stable,), default=stable, traffic=plan)
    assert {routed(snapshot).version for _ in range(20)} == {1}  # type: ignore[union-attr]
    assert planner.plan(document, {"canary": 7}, [stable]) is None


def test_measure_splits_in_and_out_of_the_domain_for_small_and_large_calls() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    histogram = Histogram("t", "t", ["domain"], registry=CollectorRegistry(), buckets=(0.5, 2.0))
    inside, outside = histogram.labels("in"), histogram.labels("out")
    x = [0.0, 1.0, 6.0]
    y = np.array([0.25, 1.0, 37.0], dtype=np.float32)
    assert measure(x, y, (-5.0, 5.0), (inside, outside)) == (0.0625, 2)
    big_x = np.linspace(-10, 10, 101)
    big_sum, big_count = measure(
        big_x, (big_x * big_x + 1.0).astype(np.float32), (-5.0, 5.0), (inside, outside)
    )
    assert big_count == 51 and big_sum == pytest.approx(51.0)
    samples = {
        (s.name, s.labels.get("domain"), s.labels.get("le")): s.value
        for s in next(iter(histogram.collect())).samples
    }
    assert samples[("t_count", "in", None)] == 2 + 51
    assert samples[("t_count", "out", None)] == 1 + 50
    assert samples[("t_bucket", "in", "0.5")] == 2  # the two exact-ish small ones
    assert samples[("t_bucket", "in", "2.0")] == 2 + 51


def test_a_measured_version_on_a_route_is_counted_under_the_route_only() -> None:
    """A version is measured once per answer: as ``direct`` when no route took the call, as
    the route when one did (the route measures the runtime under the loader's wrapper)."""
    stable = ServedModel(
        1, -5.0, 5.0, "", "", {}, MeasuredRuntime(SquareRuntime(0.2), 1, (-5, 5)), ()
    )
    canary = model(2, SquareRuntime())
    _planner, plan, _ejected, _doc, _labels = plan_for(stable, canary, (100, 0))
    measured = stable.runtime
    assert isinstance(measured, MeasuredRuntime)
    plan.routes[0].model.runtime.predict([1.0, 2.0])  # routed: measured as the route
    assert plan.routes[0].live_mse is None and measured.window.parts == 0
    stable.runtime.predict([1.0, 2.0, 9.0])  # direct: the 2 in-domain values count
    wait_for(lambda: measured.window.parts == 1, 10, "the answer measured off the call")
    assert measured.window.mse() == pytest.approx(0.04, rel=1e-5)
    snapshot = Snapshot(models=(stable, canary), default=stable, traffic=plan)
    summary = traffic_summary(snapshot)
    assert summary["version.1.live_mse_in_domain"] == pytest.approx(0.04, rel=1e-5)
    assert "version.2.live_mse_in_domain" not in summary  # never measured: nothing to say


def test_a_batch_of_answers_keeps_each_answer_in_the_live_window() -> None:
    """The background thread measures many answers at once: the histograms see every
    value, the window the batch's in-domain values."""
    runtime = MeasuredRuntime(SquareRuntime(0.5), 9107, (-1.0, 1.0))
    answers: list[Answer] = [
        ((0.5,), runtime.inner.predict((0.5,))),  # in: error 0.5
        (np.array([2.0, 3.0]), runtime.inner.predict([2.0, 3.0])),  # both out
        (np.array([], dtype=np.float64), np.array([], dtype=np.float32)),  # empty: skipped
        ([-1.0, 0.0, 4.0], runtime.inner.predict([-1.0, 0.0, 4.0])),  # 2 in, 1 out
    ]
    runtime.measure(answers)
    assert (runtime.window.parts, runtime.window.values) == (1, 3)
    assert runtime.window.mse() == pytest.approx(0.25, rel=1e-5)  # 3 in-domain values, 0.5²
    for domain, count in (("in", 3), ("out", 3)):
        labels = {"version": "9107", "route": "direct", "domain": domain}
        assert REGISTRY.get_sample_value("squarenet_predictor_abs_error_count", labels) == count
        total = REGISTRY.get_sample_value("squarenet_predictor_abs_error_sum", labels)
        assert total == pytest.approx(1.5, rel=1e-5)


def test_a_window_in_values_keeps_the_newest_parts_that_cover_its_size() -> None:
    window = LiveWindow(10, in_values=True)
    for sum_sq, count in ((100.0, 8), (4.0, 4), (6.0, 6)):
        window.add(sum_sq, count)
    # 8 + 4 + 6 values: the oldest part goes, since the newer two still cover 10
    assert (window.parts, window.values) == (2, 10)
    assert window.mse() == pytest.approx(1.0)
    answers = LiveWindow(2)
    for sum_sq, count in ((100.0, 1), (1.0, 1), (3.0, 1)):
        answers.add(sum_sq, count)
    assert answers.parts == 2 and answers.mse() == pytest.approx(2.0)
    assert answers.mse(min_parts=3) is None
