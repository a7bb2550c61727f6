"""The Celery application: configured from Django settings (CELERY_* names)."""

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatsite.settings")

app = Celery("chatsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

logger = logging.getLogger("chatsite.worker")


@worker_ready.connect
def announce_provider(**kwargs: Any) -> None:
    """Say at start-up which inference provider answers, and loudly if it is the stand-in."""
    from django.conf import settings

    from chat.providers import offline_notice

    notice = offline_notice()
    if notice:
        logger.warning(notice)
    else:
        logger.info("inference provider: %s (%s)", settings.INFERENCE_PROVIDER,
                    settings.INFERENCE_MODEL or "default model")  # fmt: skip
