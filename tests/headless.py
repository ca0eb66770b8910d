"""Headless Chromium for tests, driven by Playwright (``playwright.sync_api``) on the system's chromium
(``executable_path``: Debian's package, which .ci/run installs; Playwright's own browser download is not needed).

:func:`render` opens one local page in a fresh browser and returns what a reader would get: console errors,
uncaught exceptions and failed requests, the requests it made, each <img>'s load state, the rendered text and a
full-page PNG screenshot.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import sync_playwright

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions", "--disable-dev-shm-usage"]


def chromium() -> str | None:
    """Path of the chromium binary (Debian's package), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@dataclass
class Rendered:
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    text: str = ""
    screenshot: bytes = b""


IMAGES = """Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, naturalWidth: i.naturalWidth,
                                                src: i.src.slice(0, 40)}))"""


def render(page: Path, binary: str, timeout: float = 60) -> Rendered:
    """Open ``page`` (a local file) in headless Chromium; see the module docstring."""
    out = Rendered()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, args=ARGS, headless=True, timeout=timeout * 1000)
        try:
            tab = browser.new_page(viewport={"width": 1200, "height": 900})
            tab.on("console", lambda m: out.errors.append(f"console: {m.text}") if m.type in ("error", "assert") else None)
            tab.on("pageerror", lambda e: out.errors.append(f"exception: {e}"))
            tab.on("requestfailed", lambda r: out.errors.append(f"network: {r.url[:80]} {r.failure}"))
            tab.on("request", lambda r: out.requests.append(r.url[:80]))
            tab.goto(page.resolve().as_uri(), wait_until="load", timeout=timeout * 1000)
            out.images = tab.evaluate(IMAGES)
            out.text = tab.inner_text("body")
            out.screenshot = tab.screenshot(full_page=True, type="png", timeout=timeout * 1000)
        finally:
            browser.close()
    return out
