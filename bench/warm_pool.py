"""No job waits for TensorFlow: the first job after /readyz and a burst, against steady jobs.

A real ``squarenet-trainer`` (local executor, ``--max-concurrent-jobs 2``) on a temp store:

* **first**: the article's job POSTed the moment ``/readyz`` answers 200, to SUCCEEDED;
* **steady**: the same job POSTed one at a time once the pool is warm again (median);
* **burst**: 8 such jobs POSTed at once; each one's time to SUCCEEDED less its queueing
  (its ``started_at`` minus its ``created_at``) must stay within 1.2× steady;

and, in the same run, the article's script as a process (import, data, fit: its whole wall
time, ``training.run_baseline_process``): steady must be ≥ 25× faster, first ≥ 20×.

    python bench/warm_pool.py             # the article's 400 epochs
    python bench/warm_pool.py --quick     # 40 epochs (the goals are set for 400)
    python bench/warm_pool.py --json      # also one JSON line per figure

Figures are ratios within this run; nothing here fails on a wall-clock number.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from training import POLL_SECONDS, READY_TIMEOUT, article_params, run_baseline_process

from squarenet.stack import Trainer, running_trainer

CONCURRENCY = 2
BURST = 8
STEADY_RUNS = 3
BURST_SLACK = 1.2
STEADY_GOAL = 25.0
FIRST_GOAL = 20.0
FINISHED = ("SUCCEEDED", "FAILED", "CANCELLED")


def _moment(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def _until_finished(http: httpx.Client, job_id: str) -> dict[str, Any]:
    while True:
        job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
        if job["state"] in FINISHED:
            if job["state"] != "SUCCEEDED":
                raise SystemExit(f"warm-pool bench: job {job_id} ended {job['state']}")
            return job
        time.sleep(POLL_SECONDS)


def _one_job(http: httpx.Client, params: dict[str, Any]) -> float:
    started = time.perf_counter()
    job = http.post("/v1/jobs", json=params).json()
    _until_finished(http, job["id"])
    return time.perf_counter() - started


def _pool_warm_again(trainer: Trainer, used: int) -> bool:
    """Every process used so far has been replaced by a warm one (the pool is full again)."""
    return trainer.log().count(" warm in ") >= used + CONCURRENCY


def measure(params: dict[str, Any], root: Path) -> dict[str, Any]:
    """First, steady and burst times on one trainer."""
    with running_trainer(
        root / "store",
        root / "trainer.log",
        "--workers", "1", "--max-concurrent-jobs", str(CONCURRENCY),
        timeout=READY_TIMEOUT,
    ) as trainer, httpx.Client(base_url=trainer.base_url, timeout=60) as http:  # fmt: skip
        first = _one_job(http, params)  # running_trainer returned at /readyz 200
        used = 1
        steady: list[float] = []
        for _ in range(STEADY_RUNS):
            trainer.wait_until(functools.partial(_pool_warm_again, trainer, used), "a pool", 120)
            steady.append(_one_job(http, params))
            used += 1
        trainer.wait_until(functools.partial(_pool_warm_again, trainer, used), "a pool", 120)
        posted = time.perf_counter()
        ids = [http.post("/v1/jobs", json=params).json()["id"] for _ in range(BURST)]
        jobs = [_until_finished(http, job_id) for job_id in ids]
        burst = []
        for job in jobs:
            queued = _moment(job["started_at"]) - _moment(job["created_at"])
            total = _moment(job["finished_at"]) - _moment(job["created_at"])
            burst.append({"id": job["id"], "total": total, "queued": queued, "own": total - queued})
        burst_wall = time.perf_counter() - posted
    return {"first": first, "steady": steady, "burst": burst, "burst_wall": burst_wall}


def main(argv: list[str] | None = None) -> int:
    """Run the trainer's figures and the article's script, print the verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="40 epochs instead of 400")
    parser.add_argument("--seed", type=int, default=0, help="seed of every job and the baseline")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json, width=110)
    params = article_params(args).model_dump(mode="json")
    with tempfile.TemporaryDirectory(prefix="squarenet-bench-pool-") as folder:
        figures = measure(params, Path(folder))
    steady = statistics.median(figures["steady"])
    first = figures["first"]
    worst_own = max(job["own"] for job in figures["burst"])
    console.print(  # before the baseline, which takes long on a busy machine
        f"trainer: first {first:.2f} s, steady {steady:.2f} s "
        f"({', '.join(f'{s:.2f}' for s in figures['steady'])}), burst worst own {worst_own:.2f} s"
    )
    _, article_wall = run_baseline_process(args)
    table = Table("figure", "seconds", "ratio", "goal", title="POST -> SUCCEEDED, article's job")
    table.add_row("article's script as a process", f"{article_wall:.2f}", "1×", "")
    table.add_row("steady (median of 3)", f"{steady:.2f}", f"{article_wall / steady:.1f}×",
                  f"≥ {STEADY_GOAL:g}×")  # fmt: skip
    table.add_row("first after /readyz", f"{first:.2f}", f"{article_wall / first:.1f}×",
                  f"≥ {FIRST_GOAL:g}×; ≤ {BURST_SLACK}× steady")  # fmt: skip
    table.add_row(f"burst of {BURST}, worst own time", f"{worst_own:.2f}",
                  f"{worst_own / steady:.2f}× steady", f"≤ {BURST_SLACK}× steady")  # fmt: skip
    console.print(table)
    burst = Table(
        "job",
        "queued s",
        "own s",
        "total s",
        title=f"{BURST} jobs at once, {CONCURRENCY} at a time",
    )
    for job in figures["burst"]:
        burst.add_row(job["id"], f"{job['queued']:.2f}", f"{job['own']:.2f}", f"{job['total']:.2f}")
    console.print(burst)
    verdicts = {
        "steady": article_wall / steady >= STEADY_GOAL,
        "first": article_wall / first >= FIRST_GOAL and first <= BURST_SLACK * steady,
        "burst": worst_own <= BURST_SLACK * steady,
    }
    console.print(
        ", ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in verdicts.items())
    )
    if args.json:
        print(json.dumps({"bench": "warm_pool", "article_seconds": article_wall, "steady_seconds": steady,
                          "first_seconds": first, "burst_worst_own_seconds": worst_own,
                          "burst": figures["burst"], "verdicts": verdicts, "quick": args.quick}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
