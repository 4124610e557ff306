"""What a sweep's search costs to answer the article's wider-domain question.

The question: on ``mid_range`` 100, which ``num_neurons`` in [4, 64] trains to an in-domain
MSE of at most ``GOAL``? Each strategy is one sweep through the real ``squarenet-trainer``
(local executor, 2 trials at a time, the article's 400 epochs, the same base seed), with
``objective.goal`` = ``GOAL``, so it ends as soon as a trial reaches it (Katib's semantics):

* **grid**: every integer of the range, in the order Optuna's grid sampler draws them;
* **random** and **tpe** (Optuna's samplers, ``random_state`` 1);
* **tpe + medianstop + skipBelowFloor**: trials whose floor (the best MSE any network of
  that width can reach, ``(mid_range / (num_neurons + 1))⁴ / 180``) already misses the goal
  end SKIPPED without training, and trials whose loss curve trails the median are stopped.

For each: trials released, trials trained, whether and where it reached the goal, and the
CPU seconds of the trainer's job runner and its job processes (their import, training and
export: what a trial really costs here), read from ``/proc`` before and after the sweep.
The baseline is grid, measured in the same run; the goal for the combined strategy is at
least 3x less CPU than grid for an answer that meets the goal. Nothing fails on a number.

    python bench/search.py           # about ten minutes on 2 cores
    python bench/search.py --quick   # [4, 7], 40 epochs, a loose goal: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from squarenet.stack import Trainer, processes_marked, running_trainer

MID_RANGE = 100.0
LOWEST, HIGHEST = 4, 64
GOAL = 0.2
QUICK_HIGHEST, QUICK_GOAL = 7, 200.0
PARALLEL = 2
CPU_GOAL = 3.0
TICKS = os.sysconf("SC_CLK_TCK")
STRATEGIES: dict[str, dict[str, Any]] = {
    "grid": {"algorithm": {"algorithmName": "grid", "algorithmSettings": []}},
    "random": {
        "algorithm": {
            "algorithmName": "random",
            "algorithmSettings": [{"name": "random_state", "value": "1"}],
        }
    },
    "tpe": {
        "algorithm": {
            "algorithmName": "tpe",
            "algorithmSettings": [{"name": "random_state", "value": "1"}],
        }
    },
    "tpe + medianstop + skipBelowFloor": {
        "algorithm": {
            "algorithmName": "tpe",
            "algorithmSettings": [{"name": "random_state", "value": "1"}],
        },
        "earlyStopping": {"algorithmName": "medianstop"},
        "skipBelowFloor": True,
    },
}


@dataclass(frozen=True)
class Outcome:
    """One strategy's sweep."""

    strategy: str
    state: str
    trials: int
    trained: int
    skipped: int
    early_stopped: int
    answer: int | None
    """The num_neurons of the trial that reached the goal (None: none did)."""
    mse: float | None
    cpu_seconds: float
    wall_seconds: float


def runner_cpu(trainer: Trainer) -> float:
    """CPU seconds of the trainer's job runner and of its job processes that ended."""
    for pid in processes_marked(trainer.marker):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"trainer_service.control_loop" not in cmdline:
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        # utime, stime, cutime, cstime: fields 14-17 of stat, 12-15 after the command
        return sum(int(value) for value in fields[11:15]) / TICKS
    raise SystemExit("the trainer's job runner was not found")


def spec(strategy: str, epochs: int, goal: float, highest: int) -> dict[str, Any]:
    """The sweep of one strategy: the same question, the same base, its own search; at most
    as many trials as the grid has points."""
    chosen = STRATEGIES[strategy]
    space: dict[str, Any] = {"min": LOWEST, "max": highest, "step": 1}
    if chosen.get("skipBelowFloor"):
        space["skipBelowFloor"] = True
    document: dict[str, Any] = {
        "base": {"mid_range": MID_RANGE, "epochs": epochs, "seed": 1},
        "parameters": [{"name": "num_neurons", "parameterType": "int", "feasibleSpace": space}],
        "objective": {"type": "minimize", "goal": goal, "objectiveMetricName": "mse_in_domain"},
        "algorithm": chosen["algorithm"],
        "parallelTrialCount": PARALLEL,
        "maxTrialCount": highest - LOWEST + 1,
    }
    if "earlyStopping" in chosen:
        document["earlyStopping"] = chosen["earlyStopping"]
    return document


def run(
    trainer: Trainer, strategy: str, epochs: int, goal: float, highest: int, *, timeout: float
) -> Outcome:
    """One sweep to its end; what it cost."""
    cpu_before, started = runner_cpu(trainer), time.perf_counter()
    with httpx.Client(base_url=trainer.base_url, timeout=30) as http:
        sweep = http.post("/v1/sweeps", json=spec(strategy, epochs, goal, highest))
        if sweep.status_code != 202:
            raise SystemExit(f"{strategy}: the sweep was refused: {sweep.text}")
        sweep_id = sweep.json()["id"]
        deadline = time.monotonic() + timeout
        while True:
            found = http.get(f"/v1/sweeps/{sweep_id}").raise_for_status().json()
            if found["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"{strategy}: the sweep did not end within {timeout:.0f} s")
            time.sleep(0.5)
        trials = http.get(f"/v1/sweeps/{sweep_id}/trials").raise_for_status().json()["trials"]
    # the last job processes are reaped by the runner once it sees them end
    time.sleep(1.0)
    cpu = runner_cpu(trainer) - cpu_before
    reached = [
        trial
        for trial in trials
        if trial["state"] == "SUCCEEDED" and (trial["objective"] or float("inf")) <= goal
    ]
    first = min(reached, key=lambda trial: trial["finishedAt"]) if reached else None
    return Outcome(
        strategy=strategy,
        state=found["state"],
        trials=len(trials),
        trained=sum(1 for trial in trials if trial["jobId"] and trial["state"] != "SKIPPED"),
        skipped=found["trialsSkipped"],
        early_stopped=found["trialsEarlyStopped"],
        answer=None if first is None else _neurons(first),
        mse=None if first is None else float(first["objective"]),
        cpu_seconds=cpu,
        wall_seconds=time.perf_counter() - started,
    )


def _neurons(trial: dict[str, Any]) -> int:
    assigned = {item["name"]: item["value"] for item in trial["parameterAssignments"]}
    return int(float(assigned["num_neurons"]))


def main(argv: list[str] | None = None) -> int:
    """Run every strategy on one trainer, print the table (and JSON lines)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="40 epochs, a loose goal")
    parser.add_argument("--json", action="store_true", help="also print JSON lines")
    args = parser.parse_args(argv)
    console = Console(stderr=args.json, width=130)
    epochs, goal, highest = (40, QUICK_GOAL, QUICK_HIGHEST) if args.quick else (400, GOAL, HIGHEST)
    with (
        tempfile.TemporaryDirectory(prefix="squarenet-bench-search-") as folder,
        running_trainer(
            Path(folder, "store"), Path(folder, "trainer.log"),
            "--max-concurrent-jobs", str(PARALLEL), "--max-queued-jobs", "16", timeout=120,
        ) as trainer,
    ):  # fmt: skip
        outcomes = [run(trainer, name, epochs, goal, highest, timeout=900) for name in STRATEGIES]
    grid = outcomes[0]
    table = Table(
        title=f"num_neurons in [{LOWEST}, {highest}] reaching in-domain MSE <= {goal:g} on "
        f"mid_range {MID_RANGE:g} ({epochs} epochs, {PARALLEL} trials at a time)"
    )
    for column in ("strategy", "sweep", "trials", "trained", "skipped", "stopped early",
                   "answer (MSE)", "CPU s", "vs grid", "wall s"):  # fmt: skip
        table.add_column(column)
    for outcome in outcomes:
        answer = "-" if outcome.answer is None else f"{outcome.answer} ({outcome.mse:.3g})"
        table.add_row(
            outcome.strategy, outcome.state, str(outcome.trials), str(outcome.trained),
            str(outcome.skipped), str(outcome.early_stopped), answer,
            f"{outcome.cpu_seconds:.1f}", f"{grid.cpu_seconds / outcome.cpu_seconds:.2f}x less",
            f"{outcome.wall_seconds:.1f}",
        )  # fmt: skip
    console.print(table)
    if args.json:
        for outcome in outcomes[1:]:
            ratio = grid.cpu_seconds / outcome.cpu_seconds
            combined = outcome.strategy == "tpe + medianstop + skipBelowFloor"
            met = None
            if combined:
                met = outcome.answer is not None and ratio >= CPU_GOAL
            print(json.dumps({
                "bench": "search", "name": f"search: {outcome.strategy}, CPU to the goal",
                "value": outcome.cpu_seconds, "unit": "CPU s", "baseline": grid.cpu_seconds,
                "baseline_name": f"grid, {grid.trained} trials trained",
                "ratio": ratio,
                "goal": f">= {CPU_GOAL:g}x less than grid" if combined else None, "met": met,
                "trials": outcome.trials, "trained": outcome.trained, "answer": outcome.answer,
                "grid_answer": grid.answer, "quick": args.quick,
            }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
