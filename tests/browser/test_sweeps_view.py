"""The sweeps views against the sweeps API's documented shapes.

This trainer has no sweeps API yet, so the three sweeps answers (and the sweeps entry of
/openapi.json) are served by the browser's request routing from the shapes the API
specifies (Katib's names: ``parameterAssignments``, ``observation.metrics``,
``currentOptimalTrial``). Everything else is the real trainer: the trials are real jobs
and their fit curves come from ``GET /v1/jobs/{id}/fit``.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, Route, expect
from support import wait_for

from browser.browser_support import axe_violations, describe, screenshot
from squarenet.stack import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SWEEP_ID = "20261130T120000Z-5eed5eed"
GRID = [(1, 2.0), (4, 2.0), (4, 6.0)]  # (num_neurons, mid_range) per trial


def trained_jobs(trainer: Trainer) -> list[dict[str, Any]]:
    """One real job per grid point, trained to the end."""
    ids = []
    for neurons, mid_range in GRID:
        params = {"n_samples": 400, "epochs": 10, "batch_size": 40, "seed": 1,
                  "num_neurons": neurons, "mid_range": mid_range}  # fmt: skip
        answer = httpx.post(f"{trainer.base_url}/v1/jobs", json=params, timeout=10)
        assert answer.status_code == 202
        ids.append(answer.json()["id"])

    def all_done() -> list[dict[str, Any]] | None:
        jobs = [httpx.get(f"{trainer.base_url}/v1/jobs/{i}", timeout=10).json() for i in ids]
        return jobs if all(job["state"] == "SUCCEEDED" for job in jobs) else None

    return wait_for(all_done, 420, "the trial jobs to succeed", every=0.5)


def trial(job: dict[str, Any]) -> dict[str, Any]:
    return {
        "jobId": job["id"],
        "state": job["state"],
        "parameterAssignments": [
            {"name": "num_neurons", "value": job["params"]["num_neurons"]},
            {"name": "mid_range", "value": job["params"]["mid_range"]},
        ],
        "observation": {"metrics": [{"name": n, "value": v} for n, v in job["metrics"].items()]},
    }


def sweep_documents(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    trials = [trial(job) for job in jobs]
    best = min(trials, key=lambda t: t["observation"]["metrics"][-1]["value"])
    sweep = {
        "id": SWEEP_ID,
        "state": "SUCCEEDED",
        "created_at": "2026-11-30T12:00:00Z",
        "spec": {
            "parameters": [
                {"name": "num_neurons", "parameterType": "int",
                 "feasibleSpace": {"list": [1, 4]}},
                {"name": "mid_range", "parameterType": "double",
                 "feasibleSpace": {"list": [2, 6]}},
            ],
            "objective": {"type": "minimize", "objectiveMetricName": "mse_in_domain",
                          "additionalMetricNames": ["mse_out_of_domain"]},
        },
        "trials": len(trials), "trialsSucceeded": len(trials), "trialsFailed": 0,
        "trialsRunning": 0, "trialsQueued": 0, "trialsCancelled": 0,
        "currentOptimalTrial": best,
    }  # fmt: skip
    return {"sweep": sweep, "list": {"sweeps": [sweep]}, "trials": {"trials": trials}}


def route_sweeps(page: Page, documents: dict[str, Any]) -> None:
    """Answer the sweeps calls in the browser; add the sweeps paths to the real document."""

    def openapi(route: Route) -> None:
        document = route.fetch().json()
        document["paths"]["/v1/sweeps"] = {"get": {"responses": {"200": {}}}}
        route.fulfill(json=document)

    def sweeps(route: Route) -> None:
        path = route.request.url.split("?")[0]
        if path.endswith(f"/v1/sweeps/{SWEEP_ID}/trials"):
            body = documents["trials"]
        elif path.endswith(f"/v1/sweeps/{SWEEP_ID}"):
            body = documents["sweep"]
        else:
            body = documents["list"]
        route.fulfill(json=body)

    page.route("**/openapi.json", openapi)
    page.route("**/v1/sweeps**", sweeps)


def objective_column(page: Page) -> list[float]:
    values: list[float] = page.locator("#trials-table tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.children[4].textContent))"
    )
    return values


def test_trials_sort_by_the_objective_and_every_picture_is_drawn(
    trainer: Trainer, page: Page
) -> None:
    jobs = trained_jobs(trainer)
    route_sweeps(page, sweep_documents(jobs))
    page.goto(f"{trainer.base_url}/#/sweeps")
    expect(page.locator("#nav-sweeps")).to_be_visible()
    expect(page.locator(f"tr[data-sweep-id='{SWEEP_ID}']")).to_contain_text(
        f"{len(GRID)}/{len(GRID)}"
    )
    page.click(f"a[href='#/sweeps/{SWEEP_ID}']")

    rows = page.locator("#trials-table tbody tr")
    expect(rows).to_have_count(len(GRID))
    ascending = objective_column(page)
    assert ascending == sorted(ascending)
    best = min(jobs, key=lambda job: job["metrics"]["mse_in_domain"])
    expect(rows.first).to_have_attribute("data-job-id", best["id"])
    expect(rows.first).to_contain_text("best")
    page.click("#sort-objective")
    assert objective_column(page) == sorted(ascending, reverse=True)
    expect(page.locator("th[aria-sort]")).to_have_attribute("aria-sort", "descending")

    # one chart per varied parameter, and the trials' fits overlaid (real /fit curves)
    expect(page.locator("canvas[aria-label^='mse_in_domain against']")).to_have_count(2)
    expect(page.locator("#overlay-chart")).to_be_visible()
    datasets = page.evaluate(
        "() => window.Chart.getChart(document.querySelector('#overlay-chart'))"
        ".data.datasets.map(d => d.label)"
    )
    assert len(datasets) == len(GRID) + 1 and datasets[-1] == "x²", datasets
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    screenshot(page, "sweep")
    page.reload()  # the deep link of a sweep survives a reload
    expect(page.locator("h1")).to_contain_text(SWEEP_ID)
    expect(page.locator("#overlay-chart")).to_be_visible()
