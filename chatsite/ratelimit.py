"""Fixed-window rate limits kept in Redis, so they hold across sockets and processes."""

import time

from chatsite.errors import AppError
from chatsite.redis_clients import get_async_redis, get_redis

# INCR and set the window's expiry in one round trip; returns [count, ms left in window].
_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"""


def _key(scope: str, subject: str, window: int) -> str:
    return f"ratelimit:{scope}:{subject}:{int(time.time()) // window}"


def _verdict(result: list[int], limit: int) -> None:
    count, ttl_ms = int(result[0]), int(result[1])
    if count > limit:
        retry_after = max(ttl_ms, 0) / 1000
        raise AppError(
            "rate_limited",
            f"Too many requests; try again in {max(1, round(retry_after))} s.",
            status=429,
            extra={"retry_after": round(retry_after, 3)},
        )


def rate_limit_check(*, scope: str, subject: str, limit: int, window: int) -> None:
    """Count one event for subject; raise AppError(rate_limited) past limit per window."""
    client = get_redis()
    result = client.eval(_SCRIPT, 1, _key(scope, subject, window), window * 1000)
    _verdict(result, limit)


async def rate_limit_check_async(*, scope: str, subject: str, limit: int, window: int) -> None:
    """Async form of rate_limit_check, for consumers."""
    client = get_async_redis()
    result = await client.eval(_SCRIPT, 1, _key(scope, subject, window), window * 1000)
    _verdict(result, limit)
