"""The dashboard screenshots of docs/trainer-api.md (``docs/dashboard-*.png``), taken from a real run.

Starts ``squarenet-trainer`` on a temp store, trains the article's job and two of its
experiments (fewer units; a wider domain), leaves one long job running and cancels another,
then photographs the jobs view, the article job's page and the models view in Debian's
headless Chromium. The PNGs are quantised to a small palette to stay small in the repo.

    .venv/bin/python scripts/dashboard_screenshots.py [--output docs]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from dashboard import CHROMIUM, FLAGS  # noqa: E402

from squarenet.stack import running_trainer  # noqa: E402

ARTICLE: dict[str, Any] = {"seed": 1}
EXPERIMENTS: list[dict[str, Any]] = [
    {"seed": 1, "num_neurons": 2},
    {"seed": 1, "mid_range": 100},
]
LONG = {"n_samples": 2000, "epochs": 600, "batch_size": 2, "seed": 3}


def submit(base: str, params: dict[str, Any]) -> str:
    answer = httpx.post(f"{base}/v1/jobs", json=params, timeout=10)
    answer.raise_for_status()
    return str(answer.json()["id"])


def wait_state(base: str, job_id: str, states: set[str], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{base}/v1/jobs/{job_id}", timeout=10).json()
        if job["state"] in states:
            return job
        time.sleep(0.3)
    raise RuntimeError(f"job {job_id} did not reach {states}")


def save(page: Page, path: Path, colours: int = 96) -> None:
    raw = path.with_suffix(".raw.png")
    page.screenshot(path=str(raw), full_page=False)
    with Image.open(raw) as image:
        image.convert("RGB").quantize(colours).save(path, optimize=True)
    raw.unlink()
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_trainer(Path(tmp, "store"), Path(tmp, "trainer.log")) as trainer,
    ):
        base = trainer.base_url
        article = submit(base, ARTICLE)
        for params in EXPERIMENTS:
            wait_state(base, submit(base, params), {"SUCCEEDED"})
        cancelled = submit(base, LONG)
        wait_state(base, cancelled, {"RUNNING"})
        httpx.post(f"{base}/v1/jobs/{cancelled}/cancel", timeout=30)
        live = submit(base, LONG)
        wait_state(base, live, {"RUNNING"})
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            page.goto(f"{base}/#/jobs")
            page.wait_for_function(
                "() => Number(document.querySelector('#jobs-table progress')?.value) > 40"
            )
            page.evaluate("() => document.querySelector('details.submit').open = false")
            save(page, args.output / "dashboard-jobs.png")
            page.goto(f"{base}/#/jobs/{article}")
            page.wait_for_selector("#fit-chart[data-ready=true]")
            page.evaluate("() => document.querySelector('#loss-title').scrollIntoView()")
            save(page, args.output / "dashboard-job.png")
            page.goto(f"{base}/#/models")
            page.wait_for_selector("table")
            save(page, args.output / "dashboard-models.png")
            browser.close()
        httpx.post(f"{base}/v1/jobs/{live}/cancel", timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
