"""Fixed-window rate limits kept in Redis, so they hold across sockets and processes."""

import time

from chatsite.errors import AppError
from chatsite.redis_clients import get_async_redis, get_redis

# INCR and set the key's expiry in one round trip; windows are aligned to the clock.
_SCRIPT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def _key(scope: str, subject: str, window: int, now: float) -> str:
    return f"ratelimit:{scope}:{subject}:{int(now) // window}"


def _verdict(count: int, limit: int, window: int, now: float) -> None:
    if int(count) > limit:
        retry_after = window - (now % window)
        raise AppError(
            "rate_limited",
            f"Too many requests; try again in {max(1, round(retry_after))} s.",
            status=429,
            extra={"retry_after": round(retry_after, 3)},
        )


def rate_limit_check(*, scope: str, subject: str, limit: int, window: int) -> None:
    """Count one event for subject; raise AppError(rate_limited) past limit per window."""
    now = time.time()
    count = get_redis().eval(_SCRIPT, 1, _key(scope, subject, window, now), window * 1000)
    _verdict(count, limit, window, now)


async def rate_limit_check_async(*, scope: str, subject: str, limit: int, window: int) -> None:
    """Async form of rate_limit_check, for consumers."""
    now = time.time()
    key = _key(scope, subject, window, now)
    count = await get_async_redis().eval(_SCRIPT, 1, key, window * 1000)
    _verdict(count, limit, window, now)
