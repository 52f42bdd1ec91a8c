"""Browser tests of the admin dashboard: Debian's chromium, headless, against a real uvicorn coordinator.

Never ``playwright install``: the browser is the system's ``/usr/bin/chromium`` (``.ci/run`` installs
it). Without it the tests skip with the reason, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from coordinator_service.launcher import CoordinatorProcess
from tests.coordinator.helpers import ADMIN_TOKEN

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LAPTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"Debian's chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright for Python is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def coordinator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CoordinatorProcess]:
    """One real coordinator (uvicorn, in-process worker, SQLite) for the module, with fast polling."""
    data_dir = tmp_path_factory.mktemp("dashboard") / "data"
    settings = {
        "admin_token": ADMIN_TOKEN,
        "database_url": f"sqlite:///{data_dir / 'coordinator.db'}",
        "worker_poll_s": 0.05,
        "watch_interval_s": 0.05,
        "lease_s": 10,
        "threads": 1,
    }
    with CoordinatorProcess(data_dir, settings=settings) as running:
        yield running


@pytest.fixture
def http(coordinator: CoordinatorProcess) -> Iterator[httpx.Client]:
    """The API over real HTTP, as an admin script or a client agent would call it (no cookies)."""
    with httpx.Client(base_url=coordinator.url, timeout=30.0) as client:
        yield client


@dataclass
class Dashboard:
    """One browser context (its own cookies) on the coordinator, and what went wrong in its pages."""

    context: BrowserContext
    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)

    def login(self, token: str = ADMIN_TOKEN, path: str = "/dashboard") -> None:
        self.page.goto(f"{self.base_url}{path}")
        self.page.fill("#token", token)
        self.page.click("#login-form button[type=submit]")
        self.page.wait_for_url(f"{self.base_url}{path}")

    def session_cookie(self) -> str | None:
        for cookie in self.context.cookies():
            if cookie["name"] == "creamfl_dashboard":
                return cookie["value"]
        return None

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def dashboard(browser: Browser, coordinator: CoordinatorProcess) -> Iterator[Dashboard]:
    context = browser.new_context(viewport=LAPTOP)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    page = context.new_page()
    opened = Dashboard(context=context, page=page, base_url=coordinator.url)
    page.on("pageerror", lambda error: opened.errors.append(f"page error: {error}"))
    page.on("console", lambda message: message.type == "error" and opened.errors.append(message.text))
    page.on(
        "response",
        lambda response: response.status >= 400 and opened.errors.append(f"HTTP {response.status} {response.url}"),
    )
    try:
        yield opened
    finally:
        context.close()
