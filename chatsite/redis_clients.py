"""Shared Redis clients: one pool per process (sync) and one per event loop (async)."""

import asyncio
import os
import weakref

import redis
import redis.asyncio as aioredis
from django.conf import settings

_sync: tuple[int, redis.Redis] | None = None
_async: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


def get_redis() -> redis.Redis:
    """The process's sync client (re-created after fork, never per call)."""
    global _sync
    if _sync is None or _sync[0] != os.getpid():
        _sync = (os.getpid(), redis.Redis.from_url(settings.REDIS_URL))
    return _sync[1]


async def async_redis_close() -> None:
    """Close the running event loop's async client (before the loop itself closes)."""
    client = _async.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()


def get_async_redis() -> aioredis.Redis:
    """The running event loop's async client (connections belong to one loop)."""
    loop = asyncio.get_running_loop()
    client = _async.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_URL)
        _async[loop] = client
    return client
