"""GET / and the dashboard's assets: served by the trainer from its own package, no CDN."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from trainer_service import dashboard

STATIC = Path(dashboard.__file__).parent / "static"


def test_the_dashboard_page_is_html_with_a_strict_content_security_policy(
    client: FlaskClient,
) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self'" in policy
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert b'<main id="main"' in response.data


def test_every_asset_the_page_names_is_served_from_this_origin(client: FlaskClient) -> None:
    page = client.get("/").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="(/[^"]+)"', page)
    assert "/dashboard/static/app.js" in assets
    assert "/dashboard/static/views/jobs.js" in assets
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200, asset
        response.close()
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)  # nothing from elsewhere


def test_every_module_the_scripts_import_exists() -> None:
    for script in STATIC.rglob("*.js"):
        if "vendor" in script.parts:
            continue
        for target in re.findall(r'from "(\.[^"]+)"', script.read_text(encoding="utf-8")):
            assert (script.parent / target).resolve().is_file(), f"{script}: {target}"


def test_chart_js_ships_pinned_with_its_licence(client: FlaskClient) -> None:
    charts = (STATIC / "charts.js").read_text(encoding="utf-8")
    (loaded,) = re.findall(r'CHART_JS = "([^"]+)"', charts)
    response = client.get(loaded)  # the views that draw load it from this origin
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    response.close()
    vendored = (STATIC / "vendor" / "chart.umd.min.js").read_text(encoding="utf-8")
    pinned = (STATIC / "vendor" / "VERSIONS").read_text(encoding="utf-8").split()
    assert pinned[0] == "chart.js"
    assert f"Chart.js v{pinned[1]}" in vendored[:200]
    assert "MIT" in (STATIC / "vendor" / "chart.js.LICENSE.md").read_text(encoding="utf-8")
    script = (Path(__file__).parents[2] / "scripts" / "vendor-js.sh").read_text()
    assert f"CHARTJS_VERSION={pinned[1]}" in script


@pytest.mark.parametrize(
    "path", ["/dashboard/static/missing.js", "/dashboard/static/../app.py", "/index.html"]
)
def test_unknown_assets_are_404_problems(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "application/problem+json"


def test_the_page_is_read_only(client: FlaskClient) -> None:
    response = client.post("/")
    assert response.status_code == 405
    assert response.mimetype == "application/problem+json"
