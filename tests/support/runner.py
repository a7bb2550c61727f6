"""Test runner: a private Redis and a private test database directory for each run."""

import faulthandler
import os
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections
from django.test.runner import DiscoverRunner
from django.test.utils import override_settings

from chatsite.redis_server import EmbeddedRedis
from tests.support.worker import stop_all_workers

RUN_WATCHDOG_SECONDS = 45 * 60


class ChatsiteTestRunner(DiscoverRunner):
    """Start Redis (embedded unless REDIS_URL is set) before the tests, stop it after.

    Each run gets its own temp dir for Redis data and the SQLite test database, so
    runs side by side don't collide, and the dir is removed even when tests fail.
    """

    def setup_test_environment(self, **kwargs: Any) -> None:
        # SIGTERM (timeout, CI cancelling) unwinds like Ctrl-C, so teardown still runs.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        # A hung test must fail the run, with every thread's stack, long before CI's limit.
        faulthandler.dump_traceback_later(RUN_WATCHDOG_SECONDS, exit=True)
        super().setup_test_environment(**kwargs)
        self._redis: EmbeddedRedis | None = None
        self._override: override_settings | None = None
        self._dir = Path(tempfile.mkdtemp(prefix="chatsite-test-"))
        for alias in connections:
            db = connections[alias].settings_dict
            if db["ENGINE"].endswith("sqlite3"):
                db.setdefault("TEST", {})["NAME"] = str(self._dir / f"test-{alias}.sqlite3")
        if settings.REDIS_URL_IS_EMBEDDED:
            self._redis = EmbeddedRedis(data_dir=self._dir / "redis").start()
            url = self._redis.url
        else:
            url = settings.REDIS_URL
        layers = {"default": {**settings.CHANNEL_LAYERS["default"]}}
        hosts = [
            {**host, "address": url} if isinstance(host, dict) else url
            for host in layers["default"]["CONFIG"]["hosts"]
        ]
        layers["default"]["CONFIG"] = {**layers["default"]["CONFIG"], "hosts": hosts}
        # Worker subprocesses read the environment; this process reads the overridden settings.
        os.environ["REDIS_URL"] = url
        self._override = override_settings(
            REDIS_URL=url, CHANNEL_LAYERS=layers, CELERY_BROKER_URL=url
        )
        self._override.enable()
        from chatsite.celery import app

        app.conf.broker_url = url

    def teardown_test_environment(self, **kwargs: Any) -> None:
        faulthandler.cancel_dump_traceback_later()
        try:
            stop_all_workers()
            if self._override is not None:
                self._override.disable()
        finally:
            if self._redis is not None:
                self._redis.stop()
            shutil.rmtree(self._dir, ignore_errors=True)
            super().teardown_test_environment(**kwargs)
