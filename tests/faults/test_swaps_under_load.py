"""Hot swaps under load: 60 s of Predict at concurrency 32 while three versions are published."""

from __future__ import annotations

import functools
import time
from pathlib import Path

import pytest
from predictor.predictor_harness import Launcher, Predictor, add_version
from support import wait_for

from faults.load import PredictLoad, percentile, summary
from squarenet.store import ModelStore

CONCURRENCY = 32
DURATION = 60.0
STEADY = (2.0, 20.0)  # seconds after the start: the first two warm the clients up
PUBLISH_AT = (25.0, 35.0, 45.0)
SWAP_WINDOW = 5.0  # seconds after a publish counted as "during the swap"


def serves(predictor: Predictor, version: int) -> bool:
    """Whether ``version`` answers the calls that pin none."""
    return predictor.metric("squarenet_predictor_current_version") == version


@pytest.mark.slow
def test_three_swaps_under_load_fail_no_call_and_move_every_client_forward(
    store: ModelStore, trained_version: Path, launcher: Launcher
) -> None:
    add_version(store, trained_version)
    predictor = launcher.start(store)
    predictor.wait_serving()
    published: list[float] = []
    with PredictLoad(f"127.0.0.1:{predictor.port}", CONCURRENCY) as load:
        start = time.monotonic()
        for offset in PUBLISH_AT:
            time.sleep(max(0.0, start + offset - time.monotonic()))
            published.append(time.monotonic())
            version = add_version(store, trained_version)
            wait_for(
                functools.partial(serves, predictor, version),
                SWAP_WINDOW,
                f"version {version} to be served",
            )
        time.sleep(max(0.0, start + DURATION - time.monotonic()))
    calls = load.calls
    steady = [c for c in calls if start + STEADY[0] <= c.started < start + STEADY[1]]
    swapping = [c for c in calls if any(p <= c.started < p + SWAP_WINDOW for p in published)]
    steady_p99 = percentile([c.latency for c in steady], 0.99)
    swap_p99 = percentile([c.latency for c in swapping], 0.99)
    print(
        f"\nswaps under load, concurrency {CONCURRENCY}, {DURATION:.0f} s, 3 versions published:"
        f"\n  all:    {summary(calls)}\n  steady: {summary(steady)}\n  swaps:  {summary(swapping)}"
        f"\n  p99 during swaps / steady p99 = {swap_p99 / steady_p99:.2f}"
    )
    assert load.failures() == []
    assert all(worker.versions_move_forward() for worker in load.workers)
    served = {c.version for c in calls}
    assert served == {1, 2, 3, 4}
    assert steady and swapping
    # The p99 ratio is printed, not asserted: on a machine shared with other work a latency
    # ratio measures the neighbours as much as the swap (a benchmark's figure, not a test's).
