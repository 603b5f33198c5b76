"""/docs in a real browser against a real `streamflow serve`: Swagger UI renders with nothing
fetched from another host (FastAPI's default page loads it from a CDN)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Route, expect

from tests.e2e.browser import CHROMIUM, chromium

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.browser]


def test_the_api_docs_load_with_no_request_leaving_the_server(api_url: str, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (`.ci/run` installs Debian's chromium)")
    server = urlsplit(api_url).netloc
    requested: list[str] = []
    elsewhere: list[str] = []

    def record(route: Route) -> None:
        url = route.request.url
        requested.append(url)
        if urlsplit(url).netloc != server:
            # Never sent: the test is loopback only, and a page that needs it must fail here.
            elsewhere.append(url)
            route.abort()
        else:
            route.continue_()

    with chromium(tmp_path / "docs.png") as page:
        page.route("**/*", record)
        page.goto(f"{api_url}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "StreamFlow churn API", timeout=60_000
        )
        expect(page.locator(".swagger-ui")).to_contain_text("/predict", timeout=60_000)
    assert not elsewhere, f"the page asked other hosts for {elsewhere}"
    assert any(url.endswith("/swagger-ui-bundle.js") for url in requested), requested
    assert any(url.endswith("/openapi.json") for url in requested), requested
