"""The dashboard in a real browser: a page of 1,000 jobs, and its cost to the trainer.

Both run the real ``squarenet-trainer`` on a temp store and Debian's headless Chromium
(``/usr/bin/chromium``, driven by Playwright; nothing is downloaded).

**jobs-page**: the store holds 1,000 finished jobs. In a warm tab (the dashboard loaded
once, then showing another view), from switching to the jobs view to its first page shown
(the newest 100 rows, the pager counting all 1,000), against the baseline of the same tab
fetching and parsing ``GET /v1/jobs`` (the data the view is built from) on its own: the
ratio is what the view adds to the API answer it needs (rendering). The cold figure (a new
tab, navigation start to the rows, scripts and schema included) is reported beside it.

**trainer-cpu**: the CPU seconds of the trainer's web processes (the gunicorn master and
workers; not the job runner or the job's training process) per epoch of a training job,
with one dashboard tab open on the jobs view (its event stream, its list refresh), against
the same job with no dashboard open.

    python bench/dashboard.py             # 5 page loads, 2 jobs of 300 epochs each
    python bench/dashboard.py --quick     # 1 page load, 2 jobs of 30 epochs (a smoke run)
    python bench/dashboard.py --json      # JSON lines on stdout (for bench/run_all.py)

Figures are ratios within this run; nothing here fails on a wall-clock number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, sync_playwright

from squarenet.stack import running_trainer
from squarenet.store import ModelStore
from trainer_service.lifecycle import RunState
from trainer_service.params import TrainingParams
from trainer_service.runner.records import Job, JobFiles, Progress, new_job_id

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
JOBS_IN_STORE = 1_000
PAGE_GOAL_RATIO = 2.0
"""The jobs view in a warm tab may take at most 2x its bare API answer to show its rows."""
PAGE_GOAL_SECONDS = 1.0
"""... and at most this long."""
CPU_GOAL_MS = 5.0
"""Trainer CPU per epoch that one open dashboard may add."""
PAGE_ROWS = 100
PAGE_SHOWN = (
    "() => document.querySelectorAll('#jobs-table tbody tr').length === {rows}"
    " && (document.querySelector('#jobs-pager')?.textContent || '').includes('of {n} ')"
)
"""The first page of the list (the newest 100 jobs) is in the table and the pager counts all."""


def emit(enabled: bool, **figure: Any) -> None:
    """One machine-readable line per figure (for bench/run_all.py)."""
    if enabled:
        print(json.dumps({"bench": "dashboard", **figure}), flush=True)


def fill_store(root: Path, count: int) -> None:
    """``count`` SUCCEEDED job records, as the job runner leaves them."""
    files = JobFiles(ModelStore(root))
    params = TrainingParams.model_validate({"n_samples": 2000, "epochs": 50, "seed": 1})
    for index in range(count):
        stamp = f"2026-11-{1 + index // 100:02d}T{index % 24:02d}:{index % 60:02d}:00.000Z"
        files.write(
            Job(
                id=new_job_id(),
                state=RunState.SUCCEEDED,
                params=params,
                progress=Progress(epoch=50, epochs=50),
                metrics={"loss": 0.01, "mse_in_domain": 0.004 + index * 1e-6,
                         "mse_out_of_domain": 200.0},
                model_version=index + 1,
                created_at=stamp,
                started_at=stamp,
                finished_at=stamp,
            )
        )  # fmt: skip


def launch(playwright: Any) -> Browser:
    """Debian's Chromium, headless."""
    browser: Browser = playwright.chromium.launch(
        executable_path=CHROMIUM, args=FLAGS, headless=True
    )
    return browser


def jobs_page(
    browser: Browser, base: str, rounds: int
) -> tuple[list[float], list[float], list[float]]:
    """Seconds to the rows shown in a warm tab and in a cold one, and to the bare API answer.

    Each round opens a fresh tab (cold: navigation start to the rows), switches to the
    models view and back (warm: the switch to the rows, timed inside the page when the
    rows appear), then fetches and parses ``GET /v1/jobs`` in the same tab.
    """
    shown = PAGE_SHOWN.format(rows=PAGE_ROWS, n=JOBS_IN_STORE)
    warm, cold, apis = [], [], []
    for _ in range(rounds):
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        tab = context.new_page()
        tab.goto(f"{base}/#/jobs", wait_until="commit")
        tab.wait_for_function(shown, timeout=60_000)
        cold.append(tab.evaluate("() => performance.now()") / 1000)
        tab.evaluate("() => { location.hash = '#/models'; }")
        tab.wait_for_function("() => !document.querySelector('#jobs-table')", timeout=60_000)
        tab.evaluate("() => { window.switched = performance.now(); location.hash = '#/jobs'; }")
        # the predicate stamps the first frame that shows the rows (polled every frame)
        seen = f"() => ({shown})() && (window.seen = window.seen || performance.now())"
        tab.wait_for_function(seen, polling="raf", timeout=60_000)
        warm.append(tab.evaluate("() => (window.seen - window.switched) / 1000"))
        apis.append(
            tab.evaluate(
                """async () => { const t = performance.now();
                   const body = await (await fetch('/v1/jobs', {cache: 'no-store'})).json();
                   if (body.jobs.length < 1000) throw new Error('jobs missing');
                   return (performance.now() - t) / 1000; }"""
            )
        )
        context.close()
    return warm, cold, apis


def cpu_seconds(master: int) -> float:
    """CPU of the gunicorn master and its workers (the job runner's tree left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        pid, parent = int(entry.name), int(fields[1])
        if pid == master or (parent == master and b"dispatcher" not in cmdline):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def train_and_measure(base: str, master: int, epochs: int) -> tuple[float, int, float]:
    """Run one job to its end: the web processes' CPU seconds meanwhile, epochs, seconds."""
    params = {"n_samples": 2000, "epochs": epochs, "batch_size": 2, "seed": 1}
    job = httpx.post(f"{base}/v1/jobs", json=params, timeout=10).json()
    while httpx.get(f"{base}/v1/jobs/{job['id']}", timeout=10).json()["state"] == "QUEUED":
        time.sleep(0.05)
    before, started = cpu_seconds(master), time.monotonic()
    while True:
        state = httpx.get(f"{base}/v1/jobs/{job['id']}", timeout=10).json()
        if state["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
            break
        time.sleep(0.5)  # this poll costs the trainer too, equally in both runs
    cpu = cpu_seconds(master) - before
    return cpu, int(state["progress"]["epoch"]), time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """Measure both figures and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds, shorter jobs")
    parser.add_argument("--json", action="store_true", help="JSON lines on stdout")
    args = parser.parse_args(argv)
    rounds, epochs = (1, 30) if args.quick else (5, 300)
    say = (lambda *_: None) if args.json else print
    with (
        tempfile.TemporaryDirectory(prefix="squarenet-bench-dashboard-") as tmp,
        sync_playwright() as pw,
    ):
        browser = launch(pw)
        # --- a page of 1,000 jobs -------------------------------------------------------------
        crowded = Path(tmp, "crowded")
        fill_store(crowded, JOBS_IN_STORE)
        with running_trainer(crowded, Path(tmp, "crowded.log")) as process:
            base = process.base_url
            pages, colds, apis = jobs_page(browser, base, rounds)
        page, api, cold = (statistics.median(v) for v in (pages, apis, colds))
        say(f"jobs view, {JOBS_IN_STORE} jobs, warm tab: {page:.3f} s (cold tab {cold:.3f} s, "
            f"GET /v1/jobs alone {api:.3f} s)")  # fmt: skip
        met = page / api <= PAGE_GOAL_RATIO and page <= PAGE_GOAL_SECONDS
        emit(args.json, figure="jobs_page_seconds", name=f"dashboard: jobs page rendered, {JOBS_IN_STORE} jobs in the store, warm tab, median",
             value=page, unit="s", baseline=api, baseline_name="GET /v1/jobs fetched and parsed in the same tab",
             ratio=page / api, goal=f"<= {PAGE_GOAL_RATIO:g}x and <= {PAGE_GOAL_SECONDS:g} s", met=met, rounds=pages)  # fmt: skip
        emit(args.json, figure="jobs_page_cold_seconds", name=f"dashboard: jobs page in a new tab (scripts, schema, rows), {JOBS_IN_STORE} jobs, median",
             value=cold, unit="s", baseline=api, baseline_name="GET /v1/jobs fetched and parsed in the same tab",
             ratio=cold / api, goal="report", met=None, rounds=colds)  # fmt: skip

        # --- the trainer's CPU with one dashboard open ----------------------------------------
        fresh = Path(tmp, "fresh")
        with running_trainer(fresh, Path(tmp, "fresh.log")) as process:
            base = process.base_url
            idle, idle_epochs, _ = train_and_measure(base, process.pid, epochs)
            context = browser.new_context()
            tab = context.new_page()
            tab.goto(f"{base}/#/jobs")
            tab.wait_for_selector("#jobs-table")
            watched, watched_epochs, seconds = train_and_measure(base, process.pid, epochs)
            context.close()
        browser.close()
    per_epoch = 1000 * watched / watched_epochs
    baseline = 1000 * idle / idle_epochs
    added = per_epoch - baseline
    say(
        f"trainer CPU per epoch: {per_epoch:.2f} ms with the dashboard open, {baseline:.2f} ms"
        f" without ({watched_epochs} epochs in {seconds:.1f} s)"
    )
    emit(args.json, figure="trainer_cpu_ms_per_epoch", name="dashboard: trainer CPU per epoch, one dashboard open",
         value=per_epoch, unit="ms", baseline=baseline, baseline_name="same job, no dashboard",
         ratio=per_epoch / baseline if baseline > 0 else None,
         goal=f"adds <= {CPU_GOAL_MS:g} ms", met=added <= CPU_GOAL_MS, added_ms=added, epochs=watched_epochs, job_seconds=seconds)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
