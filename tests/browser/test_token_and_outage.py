"""The dashboard with an API token, and while the trainer is down and comes back."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from support import free_port, service_env

from browser.browser_support import Console, screenshot
from squarenet.stack import running_trainer

pytestmark = [pytest.mark.slow, pytest.mark.browser]

TOKEN = "dashboard-test-token"  # noqa: S105 - a test's own token
SMALL = {"n_samples": "200", "epochs": "3", "batch_size": "20"}


def fill_small_job(page: Page) -> None:
    for name, value in SMALL.items():
        page.fill(f"#field-{name}", value)


def test_a_mutation_asks_for_the_token_once_and_a_401_says_so(
    tmp_path: Path, page: Page, console: Console
) -> None:
    console.expect(r"status of 401")  # each refused POST is logged as a failed load
    with running_trainer(
        tmp_path / "store",
        tmp_path / "trainer.log",
        env=service_env({"SQUARENET_API_TOKEN": TOKEN}),
    ) as trainer:
        page.goto(f"{trainer.base_url}/#/jobs")
        fill_small_job(page)
        submit = page.locator("#submit-form button[type=submit]")
        dialog = page.locator("#token-dialog")

        submit.click()  # no token yet: asked for, and dismissing it leaves the 401
        expect(dialog).to_be_visible()
        page.click("#token-cancel")
        expect(page.locator("#submit-error")).to_contain_text("401")

        submit.click()  # a wrong token is refused and the dialog says so
        page.fill("#token-input", "wrong")
        page.click("#token-form button[type=submit]")
        expect(page.locator("#token-reason")).to_contain_text("refused (401")
        screenshot(page, "token-refused")
        page.fill("#token-input", TOKEN)
        page.click("#token-form button[type=submit]")
        expect(page.locator("#submit-error")).to_contain_text("submitted")
        expect(dialog).to_be_hidden()

        first = page.locator("#submit-error").inner_text()
        submit.click()  # kept for the tab: not asked again
        expect(page.locator("#submit-error")).not_to_have_text(first)
        expect(page.locator("#submit-error")).to_contain_text("submitted")
        expect(dialog).to_be_hidden()
        stored = page.evaluate(
            "() => [sessionStorage.getItem('squarenet.apiToken'), localStorage.length,"
            " document.cookie]"
        )
        assert stored == [TOKEN, 0, ""]

        other_tab = page.context.new_page()  # sessionStorage is per tab
        other_tab.goto(f"{trainer.base_url}/#/jobs")
        assert other_tab.evaluate("() => sessionStorage.getItem('squarenet.apiToken')") is None
        other_tab.close()
        page.close()  # before the trainer stops: its reconnects would be console errors


def test_the_page_says_when_the_api_is_unreachable_and_recovers(
    tmp_path: Path, page: Page, console: Console
) -> None:
    console.expect(r"ERR_CONNECTION_REFUSED|Failed to load resource")  # the outage itself
    port = free_port()
    store = tmp_path / "store"
    banner = page.locator("#connection")
    with running_trainer(store, tmp_path / "first.log", port=port) as trainer:
        page.goto(f"{trainer.base_url}/#/jobs")
        expect(page.locator("#jobs-table")).to_be_visible()
        expect(banner).to_be_hidden()
    page.goto(f"{trainer.base_url}/#/models")  # a view change needs the API: it is gone
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("cannot be reached")
    screenshot(page, "unreachable")
    with running_trainer(store, tmp_path / "second.log", port=port):
        expect(banner).to_be_hidden(timeout=20_000)
        expect(page.locator("h1")).to_have_text("Models")  # the view re-rendered by itself
        page.close()
