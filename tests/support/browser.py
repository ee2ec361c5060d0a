"""Headless Chromium (Debian's, never a downloaded one) driven by Playwright, for the page tests.

Every page is watched: an uncaught script error or a console error fails the test that
opened it, so a broken page cannot pass by accident.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from .paths import JS_DIR, ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
#: The viewports the issue tried both front ends in: a desktop and a phone.
DESKTOP = (1280, 800)
PHONE = (390, 844)
AXE = JS_DIR / "node_modules" / "axe-core" / "axe.min.js"
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
    os.environ["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD"] = "1"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class PageErrors:
    """Script errors and console errors a page reported while a test used it."""

    def __init__(self, page: Page) -> None:
        self.errors: list[str] = []
        # A failed request also logs a console error; tests that cause one on purpose (a server
        # restart) say so with `allow`.
        self.allowed: tuple[str, ...] = ()
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(text in message.text for text in self.allowed):
            self.errors.append(f"console: {message.text}")

    def allow(self, *texts: str) -> None:
        self.allowed += texts


OpenPage = Callable[..., tuple[Page, "PageErrors"]]


@pytest.fixture
def page_errors() -> list[PageErrors]:
    return []


@pytest.fixture
def new_page(browser: Browser, page_errors: list[PageErrors]) -> Iterator[OpenPage]:
    """new_page(url, permissions=, init_script=, viewport=, color_scheme=) -> (page, errors);
    contexts close after the test."""
    contexts = []

    def open_page(
        url: str,
        *,
        permissions: tuple[str, ...] = (),
        init_script: str | None = None,
        viewport: tuple[int, int] = DESKTOP,
        color_scheme: Literal["light", "dark"] = "light",
    ) -> tuple[Page, PageErrors]:
        width, height = viewport
        context = browser.new_context(
            viewport={"width": width, "height": height},
            color_scheme=color_scheme,
            has_touch=viewport == PHONE,
        )
        if permissions:
            context.grant_permissions(list(permissions), origin=url.split("/", 3)[0] + "//" + url.split("/", 3)[2])
        contexts.append(context)
        page = context.new_page()
        if init_script is not None:  # runs before the page's own scripts
            page.add_init_script(init_script)
        page.set_default_timeout(15_000)
        errors = PageErrors(page)
        page_errors.append(errors)
        page.goto(url)
        return page, errors

    yield open_page
    for context in contexts:
        context.close()
    reported = [error for errors in page_errors for error in errors.errors]
    assert not reported, "the page reported errors:\n" + "\n".join(reported)


def save_screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    """Into docs/ when UPDATE_SCREENSHOTS=1 (`make screenshots`), otherwise beside the test."""
    target = DOCS / name if os.environ.get("UPDATE_SCREENSHOTS") == "1" else tmp_path / name
    page.screenshot(path=str(target))
    assert target.stat().st_size > 10_000, "a screenshot of a rendered page"
    return target


def serious_accessibility_violations(page: Page) -> list[dict[str, object]]:
    """axe-core (npm, from tests/js) over the page as it is now: the serious and critical ones."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: npm ci in tests/js (make test does)")
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, object]] = page.evaluate(
        """async () => (await axe.run(document, { resultTypes: ["violations"] })).violations
            .filter(v => v.impact === "serious" || v.impact === "critical")
            .map(v => ({ id: v.id, impact: v.impact, help: v.help,
                         nodes: v.nodes.slice(0, 5).map(n => n.target.join(" ") + " : " + n.failureSummary) }))"""
    )
    return found
