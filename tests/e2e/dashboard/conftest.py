"""Browser tests of the dashboard: Playwright driving Debian's Chromium (scripts/setup.sh installs
it; `playwright install` is never needed), against the whole stack as `gobuild dev` starts it.

A failing test leaves a screenshot of each of its pages in `test-screenshots/`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[3] / "test-screenshots"
# Generous: CI runs these on two shared cores.
DEFAULT_TIMEOUT_MS = 30_000


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"report_{report.when}", report)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # Module scope: nothing of Playwright's own event loop outlives the module's tests.
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh (it installs Debian's chromium)")
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def new_context(
    browser: Browser, request: pytest.FixtureRequest
) -> Iterator[Callable[[], BrowserContext]]:
    """Makes browser contexts (separate cookie jars: one per person); on failure, every open
    page is saved as a screenshot."""
    contexts: list[BrowserContext] = []

    def make() -> BrowserContext:
        context = browser.new_context(viewport={"width": 1300, "height": 1000})
        context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    failed = any(
        getattr(getattr(request.node, f"report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )
    if failed:
        SCREENSHOTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for number, context in enumerate(contexts):
            for index, page in enumerate(context.pages):
                path = SCREENSHOTS / f"{name}-{number}-{index}.png"
                try:
                    page.screenshot(path=str(path), full_page=True)
                except Exception as exc:  # the page may be gone; the test failed anyway
                    print(f"no screenshot of {page.url}: {exc}")
                else:
                    print(f"screenshot of {page.url}: {path}")
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context: Callable[[], BrowserContext]) -> Page:
    """A page in a fresh browser context."""
    return new_context().new_page()
