"""Debian's chromium, driven by Playwright (its own browser builds are never downloaded)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
# As root in a container chromium needs --no-sandbox; the rest keeps it off the (closed) network:
# without them it retries Google's hosts at every start.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextmanager
def chromium(screenshot: Path) -> Iterator[Page]:
    """A fresh headless chromium and a page of 1600×1000; its screenshot is taken at the end,
    whether the test passed or not."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            try:
                yield page
            finally:
                page.screenshot(path=screenshot)
        finally:
            browser.close()
