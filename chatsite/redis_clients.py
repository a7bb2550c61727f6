"""Shared Redis clients: one pool per process (sync) and one per event loop (async)."""

import asyncio
import os
import weakref
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.commands.core import AsyncScript, Script
from redis.exceptions import NoScriptError

_sync: tuple[int, redis.Redis] | None = None
_async: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


def get_redis() -> redis.Redis:
    """The process's sync client (re-created after fork, never per call).

    Each of a worker's greenlets holds at most one connection at a time, so the pool's
    cap (REDIS_MAX_CONNECTIONS, above the worker's concurrency) is not reached.
    """
    global _sync
    if _sync is None or _sync[0] != os.getpid():
        _sync = (
            os.getpid(),
            redis.Redis.from_url(
                settings.REDIS_URL, max_connections=settings.REDIS_MAX_CONNECTIONS
            ),
        )
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
        client = aioredis.Redis.from_url(
            settings.REDIS_URL, max_connections=settings.REDIS_MAX_CONNECTIONS
        )
        _async[loop] = client
    return client


class RedisScript:
    """A Lua script run by its SHA1 (EVALSHA) on the shared clients, loaded on first NOSCRIPT.

    EVAL would send the whole source with every call and make Redis hash it every time.
    """

    def __init__(self, source: str) -> None:
        body = source.encode()  # bytes: the SHA1 needs no client's encoder
        self._sync = Script(None, body)
        self._async = AsyncScript(None, body)

    def run(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run it on the process's sync client."""
        client = get_redis()
        try:  # EVALSHA directly, as run_async does
            return client.evalsha(self._sync.sha, len(keys), *keys, *args)
        except NoScriptError:
            return self._sync(keys, args, client=client)

    async def run_async(self, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run it on the running event loop's async client."""
        client = get_async_redis()
        try:  # EVALSHA directly: redis-py's Script call rebuilds the arguments every time
            return await client.evalsha(self._async.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self._async(keys, args, client=client)
