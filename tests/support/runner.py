"""Test runner: a private embedded Redis for the whole run (unless REDIS_URL is set)."""

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.test.runner import DiscoverRunner
from django.test.utils import override_settings

from chatsite.redis_server import EmbeddedRedis


class ChatsiteTestRunner(DiscoverRunner):
    """Start Redis before the tests and stop it after, even when they fail."""

    def setup_test_environment(self, **kwargs: Any) -> None:
        super().setup_test_environment(**kwargs)
        self._redis: EmbeddedRedis | None = None
        self._redis_dir: str | None = None
        if settings.REDIS_URL_IS_EMBEDDED:
            self._redis_dir = tempfile.mkdtemp(prefix="chatsite-test-redis-")
            self._redis = EmbeddedRedis(data_dir=Path(self._redis_dir)).start()
            url = self._redis.url
        else:
            url = settings.REDIS_URL
        layers = {"default": {**settings.CHANNEL_LAYERS["default"]}}
        layers["default"]["CONFIG"] = {**layers["default"]["CONFIG"], "hosts": [url]}
        # Worker subprocesses read the environment; this process reads the overridden settings.
        os.environ["REDIS_URL"] = url
        self._override = override_settings(
            REDIS_URL=url, CHANNEL_LAYERS=layers, CELERY_BROKER_URL=url
        )
        self._override.enable()
        from chatsite.celery import app

        app.conf.broker_url = url

    def teardown_test_environment(self, **kwargs: Any) -> None:
        try:
            self._override.disable()
        finally:
            if self._redis is not None:
                self._redis.stop()
            if self._redis_dir is not None:
                shutil.rmtree(self._redis_dir, ignore_errors=True)
            super().teardown_test_environment(**kwargs)
