"""Browser and live-server fixtures for end-to-end tests.

Chromium is Debian's (``/usr/bin/chromium``), driven by Playwright; no browser is ever
downloaded. The app is served in-process so tests can compare what the browser shows
with what the server renders.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    exe = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(exe).exists():
        pytest.skip("Debian's chromium is not installed (scripts/test.sh installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors  # type: ignore[attr-defined]
    yield pg
    context.close()


@pytest.fixture
def serve(tmp_path, monkeypatch) -> Iterator:
    """``serve(demo) -> url``: launch a Blocks app on a free port for this test."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    launched = []

    def _serve(demo) -> str:
        from reviewer_app.app import launch

        _, url, _ = launch(demo, port=None, prevent_thread_lock=True, quiet=True)
        launched.append(demo)
        return url.rstrip("/")

    yield _serve
    for demo in launched:
        demo.close()
