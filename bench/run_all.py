"""Every benchmark in one run (``make bench``): one table of figures, baselines, ratios, goals.

Runs ``training.py`` (goals 1-2), ``serving.py`` (goals 3, 4 and the predictor's cold
start), ``lifecycle.py train-to-served`` (goal 5), ``lifecycle.py trainer-start``
(goal 6, trainer side), ``dashboard.py`` (the dashboard in Chromium), ``protocols.py``
(V2 against MLServer and KServe), ``sweep.py`` (a sweep's overhead), ``rollout_costs.py``
(what a traffic split, a shadow and a gate cost), ``search.py`` (what each search strategy
spends to reach a goal), ``warm_pool.py`` (no job waits for
TensorFlow) and ``grown_store.py`` (sweep passes, listings, figures and event polls on a
store holding thousands of sweeps, versions and epochs) one after another
as subprocesses, never side by side (they would
measure each other), each bounded by a timeout inside an overall budget. Their JSON lines
become the rows of one table, printed and written to ``var/bench/results.md`` and
``results.json``; each benchmark's own output goes to ``var/bench/<name>.log``.

A full run of every benchmark also writes ``bench/results.md``, the file the README links
for every figure that changes from run to run: this table, and how many tests each area
of the suite holds (collected, not run). It is committed; nobody edits it by hand.

A benchmark that fails or runs out of time shows as ``error`` and makes the exit status 1;
the others still run and report. A goal not met is a finding, not a failure: it shows as
``no`` and the exit status stays 0 (no wall-clock number fails anything).

    python bench/run_all.py            # the full run, under 30 minutes on 2 cores
    python bench/run_all.py --quick    # every benchmark's quick mode, for a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FAST_TESTS = "not slow and not docker and not cluster"
"""The marker expression of `make test-fast`."""
RESULTS = BENCH / "results.md"
"""What a full run writes for the README to link."""
BUDGET_SECONDS = 1770.0
"""The whole run's limit: `make bench` must end within 30 minutes (the protocol comparison
starts three servers and measures them side by side)."""
LIMIT_1_10_1 = (10 / 11) ** 4 / 180
"""Best in-domain MSE of any 1-10-1 ReLU network on x² over [-5, 5]."""
COLUMNS = ("figure", "squarenet", "baseline", "ratio", "goal", "met")


@dataclass(frozen=True)
class Suite:
    """One benchmark script: how to run it (full and quick) and which figures it must give."""

    name: str
    arguments: tuple[str, ...]
    """The script and its flags for a full run (``--json`` is added)."""
    timeout: float
    """Seconds it may take (full run); the quick run gets the same cap."""
    figures: tuple[str, ...] = ()
    """Figures it must print; empty: whatever it measured, but at least one."""
    quick: tuple[str, ...] = ("--quick",)
    """What a quick run adds (a later flag wins over the full run's)."""

    def command(self, quick: bool) -> list[str]:
        """The script's arguments for this run."""
        return [*self.arguments, *(self.quick if quick else ()), "--json"]


SUITES = (
    Suite("training", ("training.py", "--seeds", "10"), 420,
          ("training_seconds", "mse_in_domain", "end_to_end_seconds", "default_quality"),
          quick=("--quick", "--seeds", "1", "--repeats", "1")),
    Suite("serving", ("serving.py",), 360),
    Suite("wire", ("wire.py",), 240),
    Suite("train-to-served", ("lifecycle.py", "train-to-served"), 150,
          ("served_watch_seconds", "served_predict_seconds", "published_watch_seconds")),
    Suite("trainer-start", ("lifecycle.py", "trainer-start"), 240, ("trainer_start_seconds",)),
    Suite("dashboard", ("dashboard.py",), 150, ("jobs_page_seconds", "trainer_cpu_ms_per_epoch")),
    Suite("protocols", ("protocols.py",), 300),
    Suite("sweep", ("sweep.py",), 300, ("sweep_overhead",)),
    Suite("rollouts", ("rollout_costs.py",), 300),
    Suite("search", ("search.py",), 600),
    Suite("warm-pool", ("warm_pool.py",), 300),
    Suite("grown-store", ("grown_store.py",), 300),
)  # fmt: skip


@dataclass
class Row:
    """One line of the table, already formatted, with the raw figure kept for the JSON."""

    figure: str
    squarenet: str
    baseline: str = "-"
    ratio: str = "-"
    goal: str = "-"
    met: str = "-"
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    """What one benchmark process did."""

    name: str
    command: list[str]
    seconds: float
    returncode: int | None
    error: str | None
    figures: list[dict[str, Any]]


# --- running ------------------------------------------------------------------------------


def run_suite(suite: Suite, quick: bool, timeout: float, log_dir: Path) -> Outcome:
    """Run one benchmark in its own process group; collect its JSON lines; keep its output."""
    arguments = suite.command(quick)
    command = [sys.executable, str(BENCH / arguments[0]), *arguments[1:]]
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its servers and load processes share its group
    )
    error: str | None = None
    try:
        stdout, stderr = process.communicate(timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired:
        stdout, stderr = stop_group(process)
        error = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - started
    shown_command = ["python", f"bench/{arguments[0]}", *arguments[1:]]
    (log_dir / f"{suite.name}.log").write_text(f"$ {' '.join(shown_command)}\n{stdout}\n{stderr}")
    figures = [line for line in map(json_line, stdout.splitlines()) if line is not None]
    if error is None and process.returncode != 0:
        error = f"exit {process.returncode}: {last_line(stderr)}"
    if error is None:
        missing = [name for name in suite.figures if name not in {f.get("figure") for f in figures}]
        if missing or not figures:
            error = f"figures missing: {', '.join(missing) or 'all'}"
    return Outcome(suite.name, shown_command, seconds, process.returncode, error, figures)


def stop_group(process: subprocess.Popen[str]) -> tuple[str, str]:
    """SIGTERM the benchmark's process group, SIGKILL it if it lingers; its output so far."""
    for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 15.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            stdout, stderr = process.communicate(timeout=grace)
            return stdout or "", stderr or ""
        except subprocess.TimeoutExpired:
            continue
    return "", ""


def json_line(line: str) -> dict[str, Any] | None:
    """A benchmark's machine-readable figure, or None for table text."""
    if not line.startswith("{"):
        return None
    try:
        document = json.loads(line)
    except ValueError:
        return None
    return document if isinstance(document, dict) and "bench" in document else None


def last_line(text: str) -> str:
    """The last non-empty line of a process's error output (its exception, usually)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no error output"


# --- rows ---------------------------------------------------------------------------------


def met_text(met: object) -> str:
    """yes / no, or "-" for a figure that is reported but not judged."""
    return "-" if met is None else ("yes" if met else "no")


def number(value: float) -> str:
    """Large figures with thousands separators, small ones with three digits."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def training_rows(figure: dict[str, Any]) -> list[Row]:
    """training.py: the article configuration against plain fit, and the seeds' quality."""
    name = figure["figure"]
    if name == "training_seconds":
        return [
            Row(
                f"training time, article settings ({figure['epochs']} epochs)",
                f"{figure['value']:.2f} s",
                f"{figure['baseline']:.1f} s (plain Keras fit)",
                f"{figure['ratio']:.1f}x faster",
                ">= 20x faster",
                met_text(figure["met"]),
                figure,
            )
        ]
    if name == "mse_in_domain":
        return [
            Row(
                "in-domain MSE, article settings",
                f"{figure['value']:.5f}",
                f"{figure['baseline']:.5f} (plain Keras fit)",
                f"{figure['ratio']:.2f}x",
                "<= baseline",
                met_text(figure["met"]),
                figure,
            )
        ]
    if name == "end_to_end_seconds":
        phases = ", ".join(f"{k} {v:.2f}" for k, v in figure["phases"].items())
        return [
            Row(
                "POST /v1/jobs -> SUCCEEDED, article settings (local executor)",
                f"{figure['value']:.2f} s",
                f"{figure['baseline']:.1f} s (article's script as a process)",
                f"{figure['ratio']:.1f}x faster",
                ">= 25x faster, in-domain MSE no worse",
                met_text(figure["met"]),
                figure,
            ),
            Row("  its phases (median s)", phases[:100]),
        ]
    if name == "default_quality":
        mses, seconds = figure["mse_in_domain"], figure["train_seconds"]
        outside = sorted(figure["mse_out_of_domain"])
        seeds = figure["seeds"]
        return [
            Row(
                f"default settings: worst in-domain MSE, {seeds} seeds",
                f"{max(mses):.5f}",
                f"{LIMIT_1_10_1:.5f} (1-10-1 limit)",
                f"{max(mses) / LIMIT_1_10_1:.3f}x",
                "<= 0.0042 (1.1x limit), each seed",
                met_text(max(mses) <= 0.0042),
                figure,
            ),
            Row(
                f"default settings: slowest training, {seeds} seeds",
                f"{max(seconds):.2f} s",
                goal="<= 10 s, each seed",
                met=met_text(max(seconds) <= 10.0),
            ),
            Row(
                "default settings: median MSE outside domain",
                number(outside[len(outside) // 2]),
                goal="report (linear extrapolation)",
            ),
        ]
    return [Row(f"training: {name}", json.dumps(figure)[:60])]


def spread_text(spread: float | None) -> str:
    """How far identical rounds lay apart, when the benchmark measured it."""
    return "" if spread is None else f" (spread {spread * 100:.0f} %)"


def serving_rows(figure: dict[str, Any]) -> list[Row]:
    """serving.py: each Figure it printed, as it judged it."""
    unit = figure.get("unit", "")
    baseline = figure.get("baseline")
    ratio = figure.get("ratio")
    value = f"{number(figure['value'])} {unit}{spread_text(figure.get('spread'))}"
    if baseline is not None:
        shown_spread = spread_text(figure.get("baseline_spread"))
        baseline = f"{number(baseline)} {unit}{shown_spread} ({figure['baseline_name']})"
    return [
        Row(
            str(figure.get("name", "serving figure")),
            value,
            "-" if baseline is None else baseline,
            "-" if ratio is None else f"{ratio:.2f}x",
            str(figure.get("goal") or "-"),
            met_text(figure.get("met")),
            figure,
        )
    ]


LIFECYCLE_NAMES = {
    "served_watch_seconds": "train → served: SUCCEEDED → WatchModel, p50",
    "served_predict_seconds": "train → served: SUCCEEDED → first Predict, p50",
    "published_watch_seconds": "train → served: version published → WatchModel, p50",
    "trainer_start_seconds": "trainer cold start → /readyz 200, p50",
}


def lifecycle_rows(figure: dict[str, Any]) -> list[Row]:
    """lifecycle.py: train → served (baseline: the poll interval) and the trainer's start."""
    name = figure["figure"]
    label = LIFECYCLE_NAMES.get(name, f"lifecycle: {name}")
    if name == "trainer_start_seconds":
        return [
            Row(
                label,
                f"{figure['value']:.2f} s",
                f"{figure['baseline']:.2f} s (gunicorn + hello Flask)",
                f"{figure['ratio']:.2f}x",
                "<= 5 s",
                met_text(figure["met"]),
                figure,
            )
        ]
    return [
        Row(
            label,
            f"{figure['value']:.3f} s (p90 {figure['p90']:.3f}, max {figure['max']:.3f})",
            f"{figure['baseline']:g} s (poll interval)",
            f"{figure['ratio']:.2f}x",
            "<= 1 s" if figure["met"] is not None else "report",
            met_text(figure["met"]),
            figure,
        )
    ]


def sweep_rows(figure: dict[str, Any]) -> list[Row]:
    """sweep.py: a sweep's wall time against its trials' own time over the parallelism."""
    return [
        Row(
            f"{figure['trials']}-trial sweep, {figure['epochs']} epochs, "
            f"{figure['parallel']} at a time: wall time",
            f"{figure['value']:.1f} s",
            f"{figure['baseline']:.1f} s (trials' own time / {figure['parallel']})",
            f"{figure['ratio']:.3f}x",
            "<= 1.10x (overhead <= 10 %)",
            met_text(figure["met"]),
            figure,
        )
    ]


def warm_pool_rows(figure: dict[str, Any]) -> list[Row]:
    """warm_pool.py: the first job after /readyz, steady jobs and a burst, against the
    article's script as a process (its whole wall time) and against the steady job."""
    article, steady = figure["article_seconds"], figure["steady_seconds"]
    first, worst = figure["first_seconds"], figure["burst_worst_own_seconds"]
    verdicts = figure["verdicts"]
    baseline = f"{article:.1f} s (article's script as a process)"
    return [
        Row("warm pool: first job after /readyz 200, POST -> SUCCEEDED", f"{first:.2f} s",
            baseline, f"{article / first:.1f}x faster", ">= 20x faster, <= 1.2x steady",
            met_text(verdicts["first"]), figure),
        Row("warm pool: steady job, POST -> SUCCEEDED (median)", f"{steady:.2f} s", baseline,
            f"{article / steady:.1f}x faster", ">= 25x faster", met_text(verdicts["steady"])),
        Row("warm pool: 8 jobs at once, slowest less its queueing", f"{worst:.2f} s",
            f"{steady:.2f} s (steady job)", f"{worst / steady:.2f}x", "<= 1.2x steady",
            met_text(verdicts["burst"])),
    ]  # fmt: skip


ROW_MAKERS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "training": training_rows,
    "serving": serving_rows,
    "protocols": serving_rows,
    "wire": serving_rows,
    "lifecycle": lifecycle_rows,
    "dashboard": serving_rows,  # the same shape: name, value, unit, baseline, ratio, goal
    "sweep": sweep_rows,
    "rollouts": serving_rows,
    "search": serving_rows,  # the same shape: name, value, unit, baseline, ratio, goal
    "warm_pool": warm_pool_rows,
    "grown": serving_rows,  # the same shape: name, value, unit, baseline, ratio, goal
}


def rows_of(outcome: Outcome) -> list[Row]:
    """The table rows one benchmark gives, or one ``error`` row naming what went wrong."""
    rows: list[Row] = []
    for figure in outcome.figures:
        try:
            rows += ROW_MAKERS[figure["bench"]](figure)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            rows.append(Row(f"{outcome.name}: unreadable figure", "error", met="error",
                            goal=repr(exc)[:80], raw=figure))  # fmt: skip
    if outcome.error is not None:
        rows.append(Row(f"{outcome.name} benchmark", "error", goal=outcome.error, met="error"))
    return rows


# --- output -------------------------------------------------------------------------------


def markdown(rows: list[Row], header: list[str]) -> str:
    """The table as GitHub markdown, under a few lines saying how it was measured."""
    lines = [
        "\n\n".join(header),
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in rows:
        cells = (getattr(row, column).replace("|", "\\|") for column in COLUMNS)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def collected_tests(*marker: str) -> dict[str, int]:
    """Tests per folder of ``tests/`` as pytest collects them (``-m`` expression optional)."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    if marker:
        command += ["-m", marker[0]]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    counts: dict[str, int] = {}
    for line in done.stdout.splitlines():
        path, separator, _ = line.partition("::")
        if separator and path.startswith("tests/"):
            folder = path.split("/")[1]
            counts[folder] = counts.get(folder, 0) + 1
    return counts


def suite_markdown() -> str:
    """How many tests each area holds, and how many of them ``make test-fast`` runs."""
    every, fast = collected_tests(), collected_tests(FAST_TESTS)
    lines = [
        "## Test suite",
        "",
        f"`python -m pytest --collect-only` in the same run: {sum(every.values())} tests, "
        f'{sum(fast.values())} of them in `make test-fast` (`-m "{FAST_TESTS}"`).',
        "",
        "| tests/ | tests | in test-fast |",
        "|---|---|---|",
    ]
    lines += [
        f"| `{folder}` | {every[folder]} | {fast.get(folder, 0)} |" for folder in sorted(every)
    ]
    return "\n".join(lines) + "\n"


def results_file(table: str) -> str:
    """``bench/results.md``: the run's table and the suite's size, under a title."""
    return (
        "# Benchmark results\n\n"
        "Written by `make bench` (`python bench/run_all.py`); run it again instead of editing.\n\n"
        f"{table}\n{suite_markdown()}"
    )


def render(rows: list[Row], console: Console) -> None:
    """The one table, in the terminal."""
    table = Table(title="squarenet benchmarks (one run on this machine)")
    for column in COLUMNS:
        table.add_column(column, justify="right" if column in ("ratio", "met") else "left")
    for row in rows:
        table.add_row(*(getattr(row, column) for column in COLUMNS))
    console.print(table)


def shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it (no machine paths in output)."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


def machine() -> str:
    """What the figures were measured on."""
    return f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}"


def prepare_competitors(console: Console) -> None:
    """Build MLServer's and KServe's virtualenvs (cached) before the clock starts.

    A build can take minutes on a fresh machine; it is not what protocols.py measures. A
    failed build is left for protocols.py to report (it names pip's error in the table).
    """
    for which in ("mlserver", "kserve"):
        console.print(f"preparing .venv-{which} ...")
        subprocess.run(
            ["bash", str(ROOT / "scripts" / "client-venv.sh"), which],
            capture_output=True,
            check=False,
            timeout=1800,
        )


def main(argv: list[str] | None = None) -> int:
    """Run every benchmark in turn, print and write the table; 1 if any benchmark failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="each benchmark's quick mode")
    parser.add_argument(
        "--output", type=Path, default=ROOT / "var" / "bench", help="where results go"
    )
    parser.add_argument(
        "--only", action="append", choices=[suite.name for suite in SUITES], help="repeatable"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="where a full run writes the table the README links (default bench/results.md)",
    )
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    # a terminal's own width; piped output (CI logs, files) wide enough for one line per row
    console = Console() if sys.stdout.isatty() else Console(width=180)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    if not args.only or "protocols" in args.only:
        prepare_competitors(console)
    deadline = time.monotonic() + BUDGET_SECONDS
    outcomes: list[Outcome] = []
    for suite in SUITES:
        if args.only and suite.name not in args.only:
            continue
        timeout = min(suite.timeout, deadline - time.monotonic())
        if timeout < 10:
            outcomes.append(Outcome(suite.name, [], 0.0, None, "not run: budget spent", []))
            continue
        console.print(f"[bold]{suite.name}[/] (at most {timeout:.0f} s) ...")
        outcome = run_suite(suite, args.quick, timeout, args.output)
        verdict = "ok" if outcome.error is None else f"[red]error[/]: {outcome.error}"
        console.print(f"  {outcome.seconds:.0f} s, {len(outcome.figures)} figures, {verdict}")
        outcomes.append(outcome)
    rows = [row for outcome in outcomes for row in rows_of(outcome)]
    load_after = os.getloadavg()
    command = "python bench/run_all.py" + (" --quick" if args.quick else "")
    total = sum(outcome.seconds for outcome in outcomes)
    header = [
        f"`{command}` on {started_at} ({machine()}), {total:.0f} s in all; "
        f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after.",
        "Each ratio's baseline ran on the same machine in the same run. "
        f"Per-benchmark output: `{shown(args.output)}/<name>.log`.",
    ]
    if any(row.raw.get("figure") == "served_watch_seconds" for row in rows):
        header.append(
            "Train → served: the predictor finds new versions by polling the store (the "
            "trainer does not notify it), so the poll interval bounds the delay and is its "
            "baseline; negative delays mean it served the version before the job's record "
            "said SUCCEEDED."
        )
    render(rows, console)
    for line in header:
        console.print(line)
    table = markdown(rows, header)
    (args.output / "results.md").write_text(table)
    full_run = not args.quick and not args.only
    if full_run:
        args.results.write_text(results_file(table))
        console.print(f"written: {shown(args.results)}")
    document = {
        "command": command,
        "started_at": started_at,
        "machine": machine(),
        "quick": args.quick,
        "seconds": total,
        "load_average": {"before": load_before, "after": load_after},
        "benchmarks": [
            {key: value for key, value in asdict(outcome).items() if key != "figures"}
            for outcome in outcomes
        ],
        "rows": [asdict(row) for row in rows],
    }
    (args.output / "results.json").write_text(json.dumps(document, indent=2) + "\n")
    console.print(f"written: {args.output / 'results.md'}, {args.output / 'results.json'}")
    failed = [outcome.name for outcome in outcomes if outcome.error is not None]
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
