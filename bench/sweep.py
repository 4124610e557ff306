"""What a sweep costs beyond its trials: a 12-trial sweep's wall time against its trials' own.

Starts the real trainer (``squarenet-trainer``, ``--max-concurrent-jobs`` = the sweep's
``parallelTrialCount``) on a temp store and runs one sweep of the article's configuration
over 12 seeds. The baseline is the sum of the trials' own run times (each job's
``started_at`` to ``finished_at``, training process start included) divided by the
parallelism: what the trials would take back to back on ideal slots. The sweep's wall time is
its ``createdAt`` to ``finishedAt``; the ratio less one is the machinery's overhead (releasing
trials, claiming jobs, noticing their end). Goal: at most 10 %.

    python bench/sweep.py [--quick] [--json]   # --quick: 4 trials of 40 epochs
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from squarenet.stack import running_trainer

TRIALS = 12
QUICK_TRIALS = 4
PARALLEL = 2
GOAL_OVERHEAD = 0.10


def seconds_between(start: str, end: str) -> float:
    """Seconds from one RFC 3339 time to another."""
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def run_sweep(
    base_url: str, count: int, epochs: int, timeout: float
) -> tuple[dict[str, Any], list[Any]]:
    """Create the sweep, wait until it has ended, return it and its trials."""
    spec = {
        "base": {"epochs": epochs},
        "parameters": [
            {"name": "seed", "parameterType": "int", "feasibleSpace": {"min": 1, "max": count}}
        ],
        "parallelTrialCount": PARALLEL,
    }
    with httpx.Client(base_url=base_url, timeout=30) as http:
        sweep = http.post("/v1/sweeps", json=spec).raise_for_status().json()
        deadline = time.monotonic() + timeout
        while sweep["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            if time.monotonic() > deadline:
                raise SystemExit(f"sweep {sweep['id']} did not end within {timeout:.0f} s")
            time.sleep(0.5)
            sweep = http.get(f"/v1/sweeps/{sweep['id']}").raise_for_status().json()
        trials = http.get(f"/v1/sweeps/{sweep['id']}/trials").raise_for_status().json()["trials"]
    return sweep, trials


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="4 trials of 40 epochs")
    parser.add_argument("--json", action="store_true", help="a JSON line on stdout")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json, width=120)
    epochs, count = (40, QUICK_TRIALS) if args.quick else (400, TRIALS)
    with (
        tempfile.TemporaryDirectory(prefix="squarenet-bench-sweep-") as folder,
        running_trainer(
            Path(folder, "store"), Path(folder, "trainer.log"),
            "--max-concurrent-jobs", str(PARALLEL), timeout=60,
        ) as trainer,
    ):  # fmt: skip
        sweep, trials = run_sweep(trainer.base_url, count, epochs, timeout=1200)
    if sweep["state"] != "SUCCEEDED":
        raise SystemExit(f"sweep ended {sweep['state']}: {sweep.get('message')}")
    own = [float(trial["seconds"]) for trial in trials]
    wall = seconds_between(sweep["createdAt"], sweep["finishedAt"])
    baseline = sum(own) / PARALLEL
    ratio = wall / baseline
    table = Table(title=f"{count}-trial sweep, {epochs} epochs, parallelTrialCount {PARALLEL}")
    for column in ("sweep wall time", "trials' own time / parallelism", "ratio", "overhead"):
        table.add_column(column)
    table.add_row(f"{wall:.1f} s", f"{baseline:.1f} s", f"{ratio:.3f}", f"{ratio - 1:+.1%}")
    console.print(table)
    mses = [trial["metrics"].get("mse_in_domain") for trial in trials]
    console.print(f"in-domain MSE over the seeds: min {min(mses):.5f}, max {max(mses):.5f}")
    if args.json:
        print(json.dumps({"bench": "sweep", "figure": "sweep_overhead", "value": wall,
                          "baseline": baseline, "ratio": ratio, "trials": count,
                          "parallel": PARALLEL, "epochs": epochs,
                          "met": ratio - 1 <= GOAL_OVERHEAD}), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
