"""Fixed-window rate limits kept in Redis, so they hold across sockets and processes."""

import time

from chatsite.errors import AppError
from chatsite.redis_clients import get_async_redis, get_redis

# Count `cost` events unless that would pass the limit, in one round trip; a refused
# request is not counted. Windows are aligned to the clock. Returns 1 (allowed) or 0.
_SCRIPT = """
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local cost = tonumber(ARGV[2])
if count + cost > tonumber(ARGV[3]) then return 0 end
if redis.call('INCRBY', KEYS[1], cost) == cost then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""


def _key(scope: str, subject: str, window: int, now: float) -> str:
    return f"ratelimit:{scope}:{subject}:{int(now) // window}"


def _verdict(allowed: int, window: int, now: float) -> None:
    if not int(allowed):
        retry_after = window - (now % window)
        raise AppError(
            "rate_limited",
            f"Too many requests; try again in {max(1, round(retry_after))} s.",
            status=429,
            extra={"retry_after": round(retry_after, 3)},
        )


def rate_limit_check(*, scope: str, subject: str, limit: int, window: int, cost: int = 1) -> None:
    """Count `cost` events for subject; raise AppError(rate_limited) past limit per window."""
    now = time.time()
    key = _key(scope, subject, window, now)
    allowed = get_redis().eval(_SCRIPT, 1, key, window * 1000, cost, limit)
    _verdict(allowed, window, now)


async def rate_limit_check_async(
    *, scope: str, subject: str, limit: int, window: int, cost: int = 1
) -> None:
    """Async form of rate_limit_check, for consumers."""
    now = time.time()
    key = _key(scope, subject, window, now)
    allowed = await get_async_redis().eval(_SCRIPT, 1, key, window * 1000, cost, limit)
    _verdict(allowed, window, now)
