"""Browser tests: Debian's headless Chromium driven by Playwright against the live system.

`LiveBrowserTestCase` runs a real daphne (ChannelsLiveServerTestCase), a real Celery worker
subprocess and one Chromium per class, on the test database and the test Redis. Without
Chromium the tests are skipped with a message saying how to enable them; with the CI
environment variable set they fail instead, so CI never skips them silently.
"""

import contextlib
import os
import re
import unittest
from pathlib import Path
from typing import Any, ClassVar
from unittest import mock

from django.conf import settings

from tests.support.cases import LiveServerTestCase, reset_redis
from tests.support.worker import CeleryWorker

CHROMIUM_PATH = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS_DIR = Path(settings.BASE_DIR) / "artifacts"
WAIT_MS = 30_000  # generous: CI machines are small
HOW_TO_ENABLE = (
    "To run them: install Chromium (`sudo apt-get install chromium` on Debian/Ubuntu) or set "
    "CHROMIUM_PATH to a Chromium binary, install the dev dependencies (`make .venv/.dev`), "
    "then run `make test`."
)


def in_ci() -> bool:
    """Whether the CI environment variable is set (to anything but false/0)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def browser_unavailable_reason() -> str | None:
    """Why the browser tests cannot run on this machine, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    if not os.access(CHROMIUM_PATH, os.X_OK):
        return f"no Chromium at {CHROMIUM_PATH}"
    return None


def require_browser() -> None:
    """Skip the calling test class when Chromium is missing; under CI, fail instead."""
    reason = browser_unavailable_reason()
    if reason is None:
        return
    if in_ci():
        raise RuntimeError(f"Browser tests cannot run under CI: {reason}. {HOW_TO_ENABLE}")
    raise unittest.SkipTest(f"Browser tests skipped: {reason}. {HOW_TO_ENABLE}")


def expect(target: Any) -> Any:
    """Playwright's auto-waiting assertions, waiting up to WAIT_MS."""
    from playwright.sync_api import expect as playwright_expect

    playwright_expect.set_options(timeout=WAIT_MS)
    return playwright_expect(target)


def artifact_path(name: str) -> Path:
    """A file under artifacts/ (git-ignored), its folder created."""
    path = ARTIFACTS_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


class LiveBrowserTestCase(LiveServerTestCase):
    """daphne + a Celery worker + headless Chromium per class; a fresh browser context per test."""

    host = "localhost"
    worker_env: ClassVar[dict[str, str]] = {}

    @classmethod
    def setUpClass(cls) -> None:
        require_browser()
        super().setUpClass()  # forks daphne: before any thread or browser is started
        try:
            cls.start_services()
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def start_services(cls) -> None:
        """Start the worker and the browser; each is stopped by a class cleanup."""
        worker = CeleryWorker(env=cls.worker_environment(), name=cls.__name__)
        cls.addClassCleanup(worker.stop)
        cls.worker = worker.start()
        # Playwright's sync API leaves an asyncio loop marked running on this thread, and
        # Django then refuses ORM calls although nothing runs concurrently with them.
        cls.enterClassContext(mock.patch.dict(os.environ, {"DJANGO_ALLOW_ASYNC_UNSAFE": "1"}))
        from playwright.sync_api import sync_playwright

        cls.playwright = sync_playwright().start()
        cls.addClassCleanup(cls.playwright.stop)
        cls.browser = cls.playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, args=LAUNCH_ARGS
        )
        cls.addClassCleanup(cls.browser.close)

    @classmethod
    def worker_environment(cls) -> dict[str, str]:
        """The worker's environment on top of the test process's own."""
        return dict(cls.worker_env)

    def setUp(self) -> None:
        super().setUp()
        reset_redis()
        self.page_errors: list[str] = []
        self.pages_opened = 0
        self.page = self.new_page()

    def new_page(self, *, width: int = 1280, height: int = 800) -> Any:
        """A page in a new browser context (own storage), closed when the test ends."""
        context = self.browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(WAIT_MS)
        self.addCleanup(context.close)
        page = context.new_page()
        page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.pages_opened += 1
        self.addCleanup(self._keep_last_screen, page, self.pages_opened)
        return page

    def _keep_last_screen(self, page: Any, number: int) -> None:
        """Save what the page showed at the end of the test, for a look after a failure."""
        if page.is_closed():
            return
        name = re.sub(r"[^\w.-]+", "_", self.id().split(".", 2)[-1])
        suffix = "" if number == 1 else f"-{number}"
        # A failed screenshot must not hide the test's own result.
        with contextlib.suppress(Exception):
            page.screenshot(path=str(artifact_path(f"browser/{name}{suffix}.png")))

    def tearDown(self) -> None:
        self.assertEqual(self.page_errors, [], "the page threw uncaught errors")
        super().tearDown()

    def open_chat(self, page: Any | None = None) -> Any:
        """Load the chat page."""
        page = page or self.page
        page.goto(self.live_server_url + "/")
        return page
