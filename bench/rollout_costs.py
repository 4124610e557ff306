"""What rollouts cost: a 90/10 split and a 100 % shadow against one label, and gate time.

Three ``squarenet-predictor`` processes run side by side in one run, each on its own store
holding the same two trained versions:

* **label** — ``--serve-label stable``, no traffic document: the baseline.
* **split** — ``traffic.json`` sends 90 % of the calls to ``stable`` and 10 % to ``canary``
  (each answer measured against x², each route's ejection window fed).
* **shadow** — 100 % to ``stable`` and every call shadowed on ``canary``.

Latency is one-value calls at concurrency 1 (p50), throughput one-value calls/s at
concurrency 8 from separate client processes (``serving.py``'s load), measured interleaved
so machine noise hits all three alike. Then the gate: one label move's judgement with a
sealed measurement (LiteRT on a 10,001-point grid), and the measurement of a version
published without one (a child process loads its SavedModel). Last, what the live exact
error adds to each answer: on the caller, a loaded version's measured runtime against the
runtime under it in a warm loop (it only queues the answer), and off the call, measuring a
batch of queued answers, per answer, against the answer itself (one value and 1,000
values, interleaved rounds). Nothing fails on a number.

    python bench/rollout_costs.py           # about a minute and a half
    python bench/rollout_costs.py --quick   # shorter runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from serving import (
    LOAD_PROCESSES,
    Figure,
    interleaved,
    latency_run,
    render,
    serving_predictor,
    throughput,
)

from squarenet.rollouts import parse_traffic, write_traffic
from squarenet.store import METADATA_FILE, ModelStore
from trainer_service.rollouts.gate import GATE_FILE, Thresholds, _measure_in_child, judge

SPLIT_GOAL = 0.95
"""The split's calls/s at concurrency 8 must reach this share of the single label's."""


def _copy(store: ModelStore, source: Path, *, sealed_gate: bool = True) -> int:
    metadata = json.loads((source / METADATA_FILE).read_text(encoding="utf-8"))
    staging = store.staging_dir(tag="bench")
    ignored = [METADATA_FILE] if sealed_gate else [METADATA_FILE, GATE_FILE]
    shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*ignored))
    for key in ("files", "version", "format", "model_name"):
        metadata.pop(key, None)
    return store.publish_version(staging, metadata).version


def _trained(root: Path) -> list[Path]:
    from trainer_service.params import TrainingParams
    from trainer_service.training import train_and_publish

    store = ModelStore(root / "trained")
    folders = []
    for seed in (1, 2):
        params = TrainingParams.model_validate(
            {"n_samples": 2000, "epochs": 200, "batch_size": 500, "learning_rate": 0.02,
             "seed": seed}
        )  # fmt: skip
        outcome = train_and_publish(params, store, job_id=f"bench-{seed}", artifacts_dir=root)
        folders.append(outcome.version.path)
    return folders


def _store(root: Path, name: str, folders: list[Path], document: dict[str, Any] | None) -> Path:
    store = ModelStore(root / name)
    stable, canary = (_copy(store, folder) for folder in folders)
    store.set_label("square", "stable", stable)
    store.set_label("square", "canary", canary)
    if document is not None:
        write_traffic(store, "square", parse_traffic(document, store.read_labels("square")))
    return store.root


def _p50(port: int, calls: int) -> float:
    return statistics.median(latency_run(port, calls))


def _per_answer(predict: Any, x: Any, calls: int) -> float:
    """Median seconds of one ``predict(x)`` over ``calls`` calls in a warm loop."""
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _batch_cost(measured: Any, x: Any, answers: int, calls: int) -> float:
    """Median seconds per answer of measuring a batch of ``answers`` answers to ``x``."""
    batch = [(x, measured.inner.predict(x))] * answers
    return _per_answer(measured.measure, batch, calls) / answers


def _measuring_cost(store: ModelStore, version: int, rounds: int, calls: int) -> dict[str, Any]:
    """Seconds per answer: the caller's (measured runtime against the runtime under it, in a
    warm loop) and the background thread's (measuring a batch, per answer in it)."""
    from predictor_service.loader import load_version
    from predictor_service.traffic import MeasuredRuntime
    from squarenet.store import folder_fingerprint

    folder = store.version_dir("square", version)
    model = load_version(store, "square", version, "litert", folder_fingerprint(folder))
    measured = model.runtime
    assert isinstance(measured, MeasuredRuntime)  # the loader wraps every version
    one = np.frombuffer(np.array([0.5]).tobytes(), "<f8")  # as the wire decodes a call
    bulk = np.frombuffer(np.linspace(model.domain_min, model.domain_max, 1000).tobytes(), "<f8")
    return interleaved(
        rounds,
        {
            "measured, 1": partial(_per_answer, measured.predict, one, calls),
            "inner, 1": partial(_per_answer, measured.inner.predict, one, calls),
            "batch, 1": partial(_batch_cost, measured, one, 200, calls // 100),
            "measured, 1000": partial(_per_answer, measured.predict, bulk, calls),
            "inner, 1000": partial(_per_answer, measured.inner.predict, bulk, calls),
            "batch, 1000": partial(_batch_cost, measured, bulk, 20, calls // 100),
        },
    )


def measure(quick: bool, console: Console) -> list[Figure]:
    """Every figure, in one run."""
    rounds = 2 if quick else 6
    seconds = 0.75 if quick else 1.5
    calls = 250 if quick else 500
    median = statistics.median
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="squarenet-rollouts-")))
        console.print("training two versions ...")
        folders = _trained(tmp)
        split_doc = {"routes": [{"label": "stable", "weight": 90},
                                {"label": "canary", "weight": 10}]}  # fmt: skip
        shadow_doc = {"routes": [{"label": "stable", "weight": 100}],
                      "shadow": {"label": "canary", "percent": 100}}  # fmt: skip
        ports = {
            name: stack.enter_context(
                serving_predictor(
                    _store(tmp, name, folders, document), tmp / f"{name}.log",
                    "--serve-label", "stable",
                )
            )
            for name, document in (("label", None), ("split", split_doc), ("shadow", shadow_doc))
        }  # fmt: skip
        pool = stack.enter_context(multiprocessing.get_context("spawn").Pool(LOAD_PROCESSES))
        console.print("latency at concurrency 1, calls/s at concurrency 8 ...")
        p50 = interleaved(
            rounds, {name: partial(_p50, port, calls) for name, port in ports.items()}
        )
        rate = interleaved(
            rounds,
            {name: partial(throughput, pool, port, 8, seconds) for name, port in ports.items()},
        )
        console.print("gate evaluation ...")
        gate_store = ModelStore(tmp / "gates")
        sealed = gate_store.verify_version("square", _copy(gate_store, folders[0]))
        other = gate_store.verify_version("square", _copy(gate_store, folders[1]))
        thresholds = Thresholds(max_floor_ratio=50.0, agreement_tolerance=1e-4, max_regression=2.0)
        judged = []
        for _ in range(5 if quick else 20):
            started = time.perf_counter()
            judge(gate_store, other, sealed, thresholds)
            judged.append(time.perf_counter() - started)
        unsealed = gate_store.verify_version(
            "square", _copy(gate_store, folders[1], sealed_gate=False)
        )
        started = time.perf_counter()
        _measure_in_child(unsealed)
        child = time.perf_counter() - started
        console.print("live exact error per answer ...")
        cost = _measuring_cost(gate_store, sealed.version, rounds, 2000 if quick else 20000)

    label_p50, label_rate = median(p50["label"]), median(rate["label"])
    split_rate = median(rate["split"])
    return [
        Figure("p50 latency, 1 value, concurrency 1, 90/10 split", median(p50["split"]) * 1e3,
               "ms", label_p50 * 1e3, "one label"),
        Figure("calls/s, 1 value, concurrency 8, 90/10 split", split_rate, "calls/s",
               label_rate, "one label", f">= {SPLIT_GOAL:.2f}x",
               split_rate >= SPLIT_GOAL * label_rate),
        Figure("p50 latency, 1 value, concurrency 1, 100 % shadow", median(p50["shadow"]) * 1e3,
               "ms", label_p50 * 1e3, "one label"),
        Figure("calls/s, 1 value, concurrency 8, 100 % shadow", median(rate["shadow"]),
               "calls/s", label_rate, "one label"),
        Figure("gate: judge a label move (sealed measurement)", median(judged) * 1e3, "ms"),
        Figure("gate: measure a version without gate.json (child)", child, "s"),
        *(
            Figure(f"live exact error: the caller, {n} value{'s' if n > 1 else ''}, warm loop",
                   median(cost[f"measured, {n}"]) * 1e6, "µs",
                   median(cost[f"inner, {n}"]) * 1e6, "the same runtime unmeasured")
            for n in (1, 1000)
        ),
        *(
            Figure(f"live exact error: measuring it off the call, {n} value{'s' if n > 1 else ''}",
                   median(cost[f"batch, {n}"]) * 1e6, "µs per answer",
                   median(cost[f"inner, {n}"]) * 1e6, "the answer itself (LiteRT)")
            for n in (1, 1000)
        ),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    args = parser.parse_args(argv)
    console = Console(width=150)
    started = time.perf_counter()
    render(measure(args.quick, console), console, args.json, bench="rollouts")
    console.print(f"rollouts bench took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
