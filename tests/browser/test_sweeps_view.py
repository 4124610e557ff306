"""The sweeps views against the real sweeps API: a real grid sweep trains its trials, then
the page lists it, sorts its trials by the objective and draws every picture."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect
from support import wait_for

from browser.browser_support import axe_violations, describe, screenshot
from squarenet.stack import Trainer

pytestmark = [pytest.mark.slow, pytest.mark.browser]

SPEC = {
    "base": {"n_samples": 400, "epochs": 10, "batch_size": 40, "seed": 1},
    "parameters": [
        {"name": "num_neurons", "parameterType": "int", "feasibleSpace": {"list": [1, 4]}},
        {"name": "mid_range", "parameterType": "double", "feasibleSpace": {"list": [2, 6]}},
    ],
    "algorithm": {"algorithmName": "grid"},
    "objective": {"type": "minimize", "objectiveMetricName": "mse_in_domain",
                  "additionalMetricNames": ["mse_out_of_domain"]},
    "parallelTrialCount": 2,
}  # fmt: skip
TRIALS = 4  # the grid's size


def finished_sweep(trainer: Trainer) -> tuple[str, list[dict[str, Any]]]:
    """A real sweep run to the end through the API: its id and its trials."""
    answer = httpx.post(f"{trainer.base_url}/v1/sweeps", json=SPEC, timeout=10)
    assert answer.status_code == 202, answer.text
    sweep_id = str(answer.json()["id"])

    def done() -> dict[str, Any] | None:
        sweep = httpx.get(f"{trainer.base_url}/v1/sweeps/{sweep_id}", timeout=10).json()
        return sweep if sweep["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    sweep = wait_for(done, 420, "the sweep to finish", every=0.5)
    assert sweep["state"] == "SUCCEEDED" and sweep["trialsSucceeded"] == TRIALS, sweep
    trials = httpx.get(f"{trainer.base_url}/v1/sweeps/{sweep_id}/trials", timeout=10).json()
    return sweep_id, list(trials["trials"])


def objective_column(page: Page) -> list[float]:
    values: list[float] = page.locator("#trials-table tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.children[4].textContent))"
    )
    return values


def test_trials_sort_by_the_objective_and_every_picture_is_drawn(
    trainer: Trainer, page: Page
) -> None:
    sweep_id, trials = finished_sweep(trainer)
    page.goto(f"{trainer.base_url}/#/sweeps")
    expect(page.locator("#nav-sweeps")).to_be_visible()
    expect(page.locator(f"tr[data-sweep-id='{sweep_id}']")).to_contain_text(f"{TRIALS}/{TRIALS}")
    page.click(f"a[href='#/sweeps/{sweep_id}']")

    rows = page.locator("#trials-table tbody tr")
    expect(rows).to_have_count(TRIALS)
    ascending = objective_column(page)
    assert ascending == sorted(ascending)
    best = min(trials, key=lambda trial: trial["metrics"]["mse_in_domain"])
    expect(rows.first).to_have_attribute("data-job-id", best["jobId"])
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
    assert len(datasets) == TRIALS + 1 and datasets[-1] == "x²", datasets
    # parallel coordinates: a line per trial through both parameters and the objective
    expect(page.locator("#parallel-chart")).to_be_visible()
    lines = page.evaluate(
        "() => window.Chart.getChart(document.querySelector('#parallel-chart'))"
        ".data.datasets.map(d => d.data.map(p => p.y))"
    )
    assert len(lines) == TRIALS and all(len(line) == 3 for line in lines), lines
    assert all(0 <= y <= 1 for line in lines for y in line)
    assert lines[0][-1] == 0  # drawn best first: the lowest objective, at its axis' bottom
    violations = axe_violations(page)
    assert violations == [], describe(violations)
    screenshot(page, "sweep")
    page.reload()  # the deep link of a sweep survives a reload
    expect(page.locator("h1")).to_contain_text(sweep_id)
    expect(page.locator("#overlay-chart")).to_be_visible()
