"""Fixed-window rate limits kept in Redis, so they hold across sockets and processes."""

import time
from dataclasses import dataclass

from chatsite.errors import AppError
from chatsite.redis_clients import RedisScript

# rate_take(key, window_ms, cost, limit): count `cost` events unless that would pass the
# limit; a refused request is not counted (it is taken back in the same script). Returns
# 1 (allowed) or 0. Other scripts include it to take from a limit in the same round trip
# as their own work. One INCRBY, not GET then INCRBY: this runs for every published frame.
RATE_TAKE_LUA = """
local function rate_take(key, window_ms, cost, limit)
  cost = tonumber(cost)
  local count = redis.call('INCRBY', key, cost)
  if count == cost then redis.call('PEXPIRE', key, window_ms) end
  if count > tonumber(limit) then
    redis.call('DECRBY', key, cost)
    return 0
  end
  return 1
end
"""
_SCRIPT = RedisScript(RATE_TAKE_LUA + "return rate_take(KEYS[1], ARGV[1], ARGV[2], ARGV[3])")


@dataclass(frozen=True)
class RateWindow:
    """The current fixed window (aligned to the clock) of one subject's limit."""

    key: str
    window: int
    now: float

    @property
    def window_ms(self) -> int:
        return self.window * 1000

    def refuse(self) -> None:
        """Raise the rate_limited error, with the time left in this window."""
        retry_after = self.window - (self.now % self.window)
        raise AppError(
            "rate_limited",
            f"Too many requests; try again in {max(1, round(retry_after))} s.",
            status=429,
            extra={"retry_after": round(retry_after, 3)},
        )


def rate_window(*, scope: str, subject: str, window: int) -> RateWindow:
    """The window a request made now counts in."""
    now = time.time()
    return RateWindow(f"ratelimit:{scope}:{subject}:{int(now) // window}", window, now)


def rate_limit_check(*, scope: str, subject: str, limit: int, window: int, cost: int = 1) -> None:
    """Count `cost` events for subject; raise AppError(rate_limited) past limit per window."""
    win = rate_window(scope=scope, subject=subject, window=window)
    if not int(_SCRIPT.run(keys=[win.key], args=[win.window_ms, cost, limit])):
        win.refuse()


async def rate_limit_check_async(
    *, scope: str, subject: str, limit: int, window: int, cost: int = 1
) -> None:
    """Async form of rate_limit_check, for consumers."""
    win = rate_window(scope=scope, subject=subject, window=window)
    if not int(await _SCRIPT.run_async(keys=[win.key], args=[win.window_ms, cost, limit])):
        win.refuse()
