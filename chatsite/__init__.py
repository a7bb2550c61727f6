"""The chatsite project: settings, ASGI/Celery entry points and shared edge helpers."""

from .celery import app as celery_app

__all__ = ("celery_app",)
