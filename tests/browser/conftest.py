"""Fixtures of the browser tests: the real trainer under gunicorn, and headless Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from browser.browser_support import CHROMIUM, CHROMIUM_FLAGS, Console
from squarenet.stack import Trainer, running_trainer


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, started once for the session."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (see .ci/run)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def trainer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trainer]:
    """One real trainer (gunicorn, job runner) on a free port for the module's tests."""
    folder: Path = tmp_path_factory.mktemp("trainer")
    with running_trainer(folder / "store", folder / "trainer.log") as running:
        yield running


@pytest.fixture
def console() -> Console:
    """The console errors of the test's pages."""
    return Console()


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    """A fresh tab (own session storage); fails the test on any unexpected console error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.on("console", console.on_message)
    tab.on("pageerror", console.on_page_error)
    tab.set_default_timeout(30_000)
    yield tab
    context.close()
    assert console.unexpected() == [], console.unexpected()
