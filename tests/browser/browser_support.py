"""Headless Chromium (Debian's package) driven by Playwright, and what the tests check on a page.

No browser is downloaded: Playwright starts ``/usr/bin/chromium``. axe-core (vendored here
from npm, tests only) is evaluated in the page to check accessibility basics.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import ConsoleMessage, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "browser"
AXE_SOURCE = Path(__file__).with_name("vendor") / "axe.min.js"
AXE_RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
"""WCAG A and AA rules: labels, names, contrast, landmarks, keyboard-reachable controls."""


@dataclass
class Console:
    """Errors a page printed to its console or threw, minus those a test expects."""

    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def on_message(self, message: ConsoleMessage) -> None:
        """Keep errors and warnings (Chromium reports CSP violations and failed loads there)."""
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def on_page_error(self, error: Exception) -> None:
        """An uncaught exception in the page's scripts."""
        self.errors.append(f"uncaught: {error}")

    def expect(self, pattern: str) -> None:
        """A message the test provokes on purpose (for example a 422 the form shows)."""
        self.expected.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        """Errors no ``expect`` pattern covers."""
        return [e for e in self.errors if not any(p.search(e) for p in self.expected)]


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as ``var/test-artifacts/browser/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's WCAG A/AA violations on the page as it is now (id, help, nodes)."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        # evaluated through the DevTools protocol: the page's CSP does not apply to it
        page.evaluate(AXE_SOURCE.read_text(encoding="utf-8") + "\n;undefined")
    result: dict[str, Any] = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})",
        AXE_RULES,
    )
    return [
        {
            "id": v["id"],
            "help": v["help"],
            "nodes": [n["html"][:160] for n in v["nodes"][:5]],
        }
        for v in result["violations"]
    ]


def describe(violations: list[dict[str, Any]]) -> str:
    """Violations as readable text for an assertion message."""
    return json.dumps(violations, indent=2)
