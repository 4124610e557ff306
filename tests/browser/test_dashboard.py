"""The dashboard in headless Chromium against the real trainer: submit, watch, open, cancel.

Every test fails on any console error it did not provoke on purpose (the ``page`` fixture),
and leaves a screenshot of what it saw under ``var/test-artifacts/browser/``.
"""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import pytest
from playwright.sync_api import Page, Route, expect
from support import wait_for

from browser.browser_support import Console, axe_violations, describe, screenshot
from squarenet.stack import LocalStack, Trainer
from squarenet.v1 import predictor_pb2, predictor_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.browser]

WATCHED = {"n_samples": "8000", "epochs": "600", "batch_size": "2", "seed": "7"}
"""A job that trains for several seconds even on a quiet machine: long enough to watch."""
EPOCHS = int(WATCHED["epochs"])
QUICK = {"n_samples": 2000, "epochs": 20, "batch_size": 100, "seed": 1}
ENDLESS = {"n_samples": 2000, "epochs": 10_000, "batch_size": 2, "seed": 2}


def submit(trainer: Trainer, params: dict[str, Any]) -> str:
    response = httpx.post(f"{trainer.base_url}/v1/jobs", json=params, timeout=10)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def job_state(trainer: Trainer, job_id: str) -> str:
    return str(httpx.get(f"{trainer.base_url}/v1/jobs/{job_id}", timeout=10).json()["state"])


def finished(trainer: Trainer, job_id: str, timeout: float = 300) -> str:
    def final_state() -> str | None:
        state = job_state(trainer, job_id)
        return state if state in ("SUCCEEDED", "FAILED", "CANCELLED") else None

    return wait_for(final_state, timeout, f"job {job_id} to finish", every=0.2)


def points(page: Page) -> int:
    return int(page.get_attribute("#loss-chart", "data-points") or 0)


def test_a_job_submitted_from_the_form_is_watched_to_the_end_and_its_fit_drawn(
    trainer: Trainer, page: Page, browser: Any
) -> None:
    page.goto(f"{trainer.base_url}/#/jobs")
    for name, value in WATCHED.items():
        page.fill(f"#field-{name}", value)
    expect(page.locator("#field-mid_range")).to_have_value("10")  # the article's default
    page.click("#submit-form button[type=submit]")
    expect(page.locator("#submit-error")).to_contain_text("submitted")
    row = page.locator("#jobs-table tbody tr").first
    job_id = row.get_attribute("data-job-id")
    assert job_id
    expect(row).to_have_attribute("data-state", "RUNNING", timeout=120_000)

    # a second tab on the job page: its loss chart gains points while the job trains
    job_page = page.context.new_page()
    job_page.goto(f"{trainer.base_url}/#/jobs/{job_id}")
    job_page.wait_for_function(
        "() => Number(document.querySelector('#loss-chart')?.dataset.points || 0) > 0",
        timeout=120_000,
    )
    seen = points(job_page)
    assert 0 < seen < EPOCHS  # a partial history: the page opened while the job trained
    job_page.wait_for_function(
        f"() => Number(document.querySelector('#loss-chart').dataset.points) > {seen}"
    )
    screenshot(job_page, "job-running")

    # the list's progress bar reaches 100 % from the event stream
    bar = row.locator("progress")
    expect(bar).to_have_attribute("value", str(EPOCHS), timeout=240_000)
    expect(bar).to_have_attribute("max", str(EPOCHS))
    expect(row).to_have_attribute("data-state", "SUCCEEDED", timeout=120_000)
    expect(row.locator("td").nth(8)).to_contain_text("square v")
    screenshot(page, "jobs")

    expect(job_page.locator("#job-state")).to_contain_text("SUCCEEDED", timeout=60_000)
    expect(job_page.locator("#fit-chart")).to_have_attribute("data-ready", "true")
    assert points(job_page) == EPOCHS
    expect(job_page.locator("#fit-caption")).to_contain_text("largest error outside the domain")
    expect(job_page.locator("#lineage")).to_contain_text("files")
    expect(job_page.locator("a[href$='/plots/fit.png']")).to_be_visible()
    fit_png = httpx.get(f"{trainer.base_url}/v1/jobs/{job_id}/plots/fit.png", timeout=10)
    assert fit_png.headers["content-type"] == "image/png"
    job_page.click("#log-scale")  # the toggle redraws on a linear axis without an error
    expect(job_page.locator("#log-scale")).not_to_be_checked()
    screenshot(job_page, "job")
    job_page.close()


def test_a_running_job_is_cancelled_from_the_list(trainer: Trainer, page: Page) -> None:
    job_id = submit(trainer, ENDLESS)
    page.goto(f"{trainer.base_url}/#/jobs")
    row = page.locator(f"tr[data-job-id='{job_id}']")
    expect(row).to_have_attribute("data-state", "RUNNING", timeout=120_000)
    expect(row.locator("progress")).not_to_have_attribute("value", "0", timeout=120_000)
    row.get_by_role("button", name=f"cancel job {job_id}").click()
    # 200 once the runner confirmed (or 202 and the stream's final state a little later)
    expect(row).to_have_attribute("data-state", "CANCELLED", timeout=60_000)
    expect(page.locator("#jobs-status")).to_contain_text(f"job {job_id}", ignore_case=True)
    assert job_state(trainer, job_id) == "CANCELLED"


def test_a_422_shows_beside_the_field_it_names(
    trainer: Trainer, page: Page, console: Console
) -> None:
    console.expect(r"status of 422")  # the refused POST is logged by Chromium as a failed load
    page.goto(f"{trainer.base_url}/#/jobs")
    page.fill("#field-epochs", "0")
    page.fill("#field-learning_rate", "fast")
    page.click("#submit-form button[type=submit]")
    expect(page.locator("#error-epochs")).to_contain_text("greater than or equal to 1")
    expect(page.locator("#error-learning_rate")).not_to_be_empty()
    expect(page.locator("#field-epochs")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#error-batch_size")).to_be_empty()
    expect(page.locator("#submit-error")).to_contain_text("422")
    expect(page.locator("#field-epochs")).to_be_focused()
    screenshot(page, "jobs-422")


def test_deep_links_survive_a_reload(trainer: Trainer, page: Page) -> None:
    job_id = submit(trainer, QUICK)
    assert finished(trainer, job_id) == "SUCCEEDED"
    page.goto(f"{trainer.base_url}/#/jobs/{job_id}")
    expect(page.locator("h1")).to_contain_text(job_id)
    page.reload()
    expect(page.locator("h1")).to_contain_text(job_id)
    expect(page.locator("#fit-chart")).to_have_attribute("data-ready", "true")
    assert points(page) == QUICK["epochs"]

    page.goto(f"{trainer.base_url}/#/jobs?state=CANCELLED")
    page.reload()
    expect(page.locator("#state-filter")).to_have_value("CANCELLED")
    states = page.locator("#jobs-table tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.state)"
    )
    assert set(states) <= {"CANCELLED"}
    assert job_id not in page.locator("#jobs-table").inner_text()

    version = httpx.get(f"{trainer.base_url}/v1/jobs/{job_id}", timeout=10).json()["model_version"]
    page.goto(f"{trainer.base_url}/#/models?model=square&version={version}")
    page.reload()
    expect(page.locator(f"#version-square-{version}")).to_be_focused()
    page.go_back()
    expect(page.locator("#state-filter")).to_have_value("CANCELLED")


def test_every_page_is_accessible_and_error_free(trainer: Trainer, page: Page) -> None:
    job_id = submit(trainer, QUICK)
    assert finished(trainer, job_id) == "SUCCEEDED"
    version = httpx.get(f"{trainer.base_url}/v1/jobs/{job_id}", timeout=10).json()["model_version"]
    labelled = httpx.put(
        f"{trainer.base_url}/v1/models/square/labels/stable",
        json={"version": version, "force": True},  # a quick job does not pass the gate
        timeout=10,
    )
    assert labelled.status_code == 200, labelled.text
    views = {
        "jobs": ("#/jobs", "#jobs-table"),
        "job-page": (f"#/jobs/{job_id}", "#fit-chart[data-ready=true]"),
        "models": ("#/models", "table"),
    }
    for name, (route, ready) in views.items():
        page.goto(f"{trainer.base_url}/{route}")
        page.wait_for_selector(ready)
        violations = axe_violations(page)
        assert violations == [], f"{name}: {describe(violations)}"
        screenshot(page, f"axe-{name}")
    expect(page.locator(f"#version-square-{version}")).to_contain_text("stable")
    # this trainer has the sweeps API: the entry shows and the (empty) list is accessible
    expect(page.locator("#nav-sweeps")).to_be_visible()
    page.goto(f"{trainer.base_url}/#/sweeps")
    expect(page.locator("main h1")).to_have_text("Sweeps")
    violations = axe_violations(page)
    assert violations == [], f"sweeps: {describe(violations)}"


def test_without_a_sweeps_api_the_entry_is_hidden(trainer: Trainer, page: Page) -> None:
    """A trainer whose API document has no sweeps (an older one: stood in for by removing
    the sweeps paths from the served document in the browser) gets no Sweeps entry."""

    def without_sweeps(route: Route) -> None:
        document = route.fetch().json()
        document["paths"] = {p: o for p, o in document["paths"].items() if "sweeps" not in p}
        route.fulfill(json=document)

    page.route("**/openapi.json", without_sweeps)
    page.goto(f"{trainer.base_url}/#/jobs")
    expect(page.locator("#jobs-table")).to_be_visible()
    expect(page.locator("#nav-sweeps")).to_be_hidden()
    page.goto(f"{trainer.base_url}/#/sweeps")
    expect(page.locator("main")).to_contain_text("no sweeps API")


def test_the_keyboard_reaches_every_control_with_a_visible_focus(
    trainer: Trainer, page: Page
) -> None:
    page.goto(f"{trainer.base_url}/#/jobs")
    page.wait_for_selector("#jobs-table")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    reached = set()
    for _ in range(30):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            """() => { const e = document.activeElement; const s = getComputedStyle(e);
                return {tag: e.tagName, id: e.id || e.textContent.trim(), outline: s.outlineStyle,
                        width: parseFloat(s.outlineWidth)}; }"""
        )
        if focused["tag"] == "BODY":
            break  # past the last control
        assert focused["outline"] != "none" and focused["width"] >= 2, focused
        reached.add(focused["id"])
    assert {"Jobs", "Models", "field-n_samples", "field-epochs", "field-init"} <= reached


def test_the_models_view_shows_the_live_error_the_predictor_measures(
    services: LocalStack, page: Page, request: pytest.FixtureRequest
) -> None:
    """Trainer and predictor of one local stack: answers the predictor gives show up, as
    their exact error against the floor, in the version's row."""
    trainer = services.trainer
    job_id = submit(trainer, QUICK)
    assert finished(trainer, job_id) == "SUCCEEDED"
    version = httpx.get(f"{trainer.base_url}/v1/jobs/{job_id}", timeout=10).json()["model_version"]
    channel = grpc.insecure_channel(services.predictor_target)
    request.addfinalizer(channel.close)
    stub = predictor_pb2_grpc.PredictorStub(channel)  # type: ignore[no-untyped-call]

    def served() -> bool:
        try:
            model = stub.GetModel(predictor_pb2.GetModelRequest(), timeout=5)
        except grpc.RpcError:
            return False
        return bool(model.version == version)

    wait_for(served, 60, f"the predictor to serve version {version}")
    stub.Predict(predictor_pb2.PredictRequest(x=[n / 10 for n in range(-20, 21)]), timeout=10)

    def measured() -> dict[str, Any] | None:
        live = httpx.get(f"{trainer.base_url}/v1/models/square/live", timeout=10).json()
        entry = next((v for v in live["versions"] if v["version"] == version), None)
        return entry if entry and entry["live_mse_in_domain"] is not None else None

    entry = wait_for(measured, 30, "the live error of the answers")
    page.goto(f"{trainer.base_url}/#/models")
    cell = page.locator(f'td[data-live="{version}"]')
    expect(cell).to_contain_text("× floor")
    shown = page.evaluate(
        "async (v) => (await import('/dashboard/static/format.js')).number(v)",
        entry["live_mse_in_domain"],
    )
    assert cell.inner_text().startswith(shown)
    expect(page.locator('.live-line[data-model="square"]')).to_contain_text(
        f"predictor at {services.predictor_target}"
    )
    assert axe_violations(page) == []
