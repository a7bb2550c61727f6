"""Inference providers, one module each: INFERENCE_PROVIDER names the module to load.

A module `chat/providers/<name>.py` defining one Provider subclass is a new provider;
nothing else needs to change.
"""

import importlib
import inspect
import os
from functools import cache
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings

from chat.providers.base import Cancel, PromptMessage, Provider, ProviderError

__all__ = [
    "Cancel",
    "PromptMessage",
    "Provider",
    "ProviderError",
    "get_provider",
    "offline_notice",
    "provider_describe",
]


def provider_class(name: str) -> type[Provider]:
    """The Provider subclass defined in chat.providers.<name>."""
    if not name.isidentifier() or name == "base":
        raise ValueError(f"INFERENCE_PROVIDER={name!r} is not a provider name")
    try:
        module = importlib.import_module(f"chat.providers.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"chat.providers.{name}":
            raise  # the provider exists but needs something missing: show that
        raise ValueError(
            f"INFERENCE_PROVIDER={name!r}: no module chat/providers/{name}.py"
        ) from exc
    for _, obj in inspect.getmembers(module, inspect.isclass):
        if issubclass(obj, Provider) and obj is not Provider and obj.__module__ == module.__name__:
            return obj
    raise ValueError(f"chat.providers.{name} defines no Provider")


@cache
def _provider_for(pid: int, name: str) -> Provider:
    return provider_class(name)()


def get_provider() -> Provider:
    """This process's provider instance (created once per process, after any fork)."""
    return _provider_for(os.getpid(), settings.INFERENCE_PROVIDER)


def offline_notice() -> str | None:
    """The start-up warning when the offline stand-in answers instead of a model."""
    if settings.INFERENCE_PROVIDER == "offline":
        from chat.providers.offline import NOTICE

        return NOTICE
    return None


def provider_describe() -> dict[str, str]:
    """Which provider, model and URL answer; the URL without credentials, query or fragment."""
    provider = provider_class(settings.INFERENCE_PROVIDER)
    url = settings.INFERENCE_URL or provider.default_url.format(model=settings.INFERENCE_MODEL)
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return {
        "provider": settings.INFERENCE_PROVIDER,
        "model": settings.INFERENCE_MODEL,
        "url": urlunsplit((parts.scheme, netloc, parts.path, "", "")) if url else "",
    }
