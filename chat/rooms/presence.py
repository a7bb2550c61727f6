"""Room presence kept in Redis, so it is right however many web processes serve the room.

Each open socket is an entry `<name>\\n<channel>` in the room's sorted set, scored by the
time of its last frame; a member is a name with at least one fresh entry, so two tabs of
one person are one member. A name belongs to its owner (a user, or a browser's client id)
while present. The scripts run atomically, so exactly one process announces each join
and each leave.
"""

import asyncio
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings

from chatsite.redis_clients import RedisScript, get_async_redis

logger = logging.getLogger(__name__)

ACTIVE_KEY = "rooms:active"  # slugs whose presence set may hold entries

# KEYS: presence, owners, active. ARGV: slug, name, channel, owner, now ms, timeout ms,
# capacity. Returns "joined", "again" (the name was already here, same owner), "taken"
# (present under another owner) or "full".
_JOIN = RedisScript("""
local name, member, owner = ARGV[2], ARGV[2] .. "\\n" .. ARGV[3], ARGV[4]
local now = tonumber(ARGV[5])
local cutoff = now - tonumber(ARGV[6])
local present, count = {}, 0
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], cutoff, '+inf')) do
  local n = string.match(m, '^(.-)\\n')
  if not present[n] then present[n] = true; count = count + 1 end
end
if present[name] then
  if redis.call('HGET', KEYS[2], name) ~= owner then return 'taken' end
  redis.call('ZADD', KEYS[1], now, member)
  return 'again'
end
if count >= tonumber(ARGV[7]) then return 'full' end
redis.call('ZADD', KEYS[1], now, member)
redis.call('HSET', KEYS[2], name, owner)
redis.call('SADD', KEYS[3], ARGV[1])
return 'joined'
""")

# KEYS: presence. ARGV: member, now ms, timeout ms. Refreshes a fresh entry (1); an entry
# past the timeout is gone even if no sweep removed it yet (0), so the socket must join
# again and may find its name taken or the room full.
_TOUCH = RedisScript("""
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if tonumber(score) < tonumber(ARGV[2]) - tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
return 1
""")

# KEYS: presence, owners. ARGV: name, channel, now ms, timeout ms. Returns 1 when this
# was the name's last fresh entry (the member left), else 0 (another tab stays, or the
# entry had already timed out and its leave was announced then).
_LEAVE = RedisScript("""
local name = ARGV[1]
if redis.call('ZREM', KEYS[1], name .. "\\n" .. ARGV[2]) == 0 then return 0 end
local cutoff = tonumber(ARGV[3]) - tonumber(ARGV[4])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], cutoff, '+inf')) do
  if string.match(m, '^(.-)\\n') == name then return 0 end
end
redis.call('HDEL', KEYS[2], name)
return 1
""")

# KEYS: presence, owners, active. ARGV: slug, cutoff ms. Drops entries older than the
# cutoff; returns the names that have no fresh entry left (they left).
_SWEEP = RedisScript("""
local stale = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local gone = {}
if #stale > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
  local fresh, seen = {}, {}
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    fresh[string.match(m, '^(.-)\\n')] = true
  end
  for _, m in ipairs(stale) do
    local n = string.match(m, '^(.-)\\n')
    if not fresh[n] and not seen[n] then
      seen[n] = true
      table.insert(gone, n)
      redis.call('HDEL', KEYS[2], n)
    end
  end
end
if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return gone
""")


def _keys(slug: str) -> tuple[str, str]:
    return f"rooms:presence:{slug}", f"rooms:owners:{slug}"


def _timeout_ms() -> int:
    return int(settings.ROOM_PRESENCE_TIMEOUT * 1000)


def _now_ms() -> int:
    return int(time.time() * 1000)


async def presence_join(*, slug: str, name: str, channel: str, owner: str, capacity: int) -> str:
    """Add this socket to the room: "joined", "again", "taken" or "full"."""
    presence, owners = _keys(slug)
    result = await _JOIN.run_async(
        keys=[presence, owners, ACTIVE_KEY],
        args=[slug, name, channel, owner, _now_ms(), _timeout_ms(), capacity],
    )
    return result.decode() if isinstance(result, bytes) else result


async def presence_touch(*, slug: str, name: str, channel: str) -> bool:
    """Mark this socket alive now; False if its entry had timed out (it must join again)."""
    presence, _ = _keys(slug)
    alive = await _TOUCH.run_async(
        keys=[presence], args=[f"{name}\n{channel}", _now_ms(), _timeout_ms()]
    )
    return bool(alive)


async def presence_leave(*, slug: str, name: str, channel: str) -> bool:
    """Remove this socket; True when the member is now gone from the room."""
    presence, owners = _keys(slug)
    left = await _LEAVE.run_async(
        keys=[presence, owners], args=[name, channel, _now_ms(), _timeout_ms()]
    )
    return bool(left)


async def presence_members(*, slug: str) -> list[str]:
    """The names present in the room, sorted."""
    presence, _ = _keys(slug)
    entries = await get_async_redis().zrangebyscore(presence, _now_ms() - _timeout_ms(), "+inf")
    return sorted({entry.decode().split("\n", 1)[0] for entry in entries})


def presence_counts(*, slugs: list[str]) -> dict[str, int]:
    """How many members each room has, in one round trip (sync, for HTTP views)."""
    from chatsite.redis_clients import get_redis

    cutoff = _now_ms() - _timeout_ms()
    pipe = get_redis().pipeline(transaction=False)
    for slug in slugs:
        pipe.zrangebyscore(_keys(slug)[0], cutoff, "+inf")
    results = pipe.execute()
    return {
        slug: len({entry.decode().split("\n", 1)[0] for entry in entries})
        for slug, entries in zip(slugs, results, strict=True)
    }


async def presence_sweep(*, on_leave: Callable[[str, str], Awaitable[None]]) -> None:
    """Drop entries silent for ROOM_PRESENCE_TIMEOUT and announce members that left."""
    client = get_async_redis()
    cutoff = _now_ms() - _timeout_ms()
    for raw in await client.smembers(ACTIVE_KEY):
        slug = raw.decode()
        presence, owners = _keys(slug)
        gone = await _SWEEP.run_async(keys=[presence, owners, ACTIVE_KEY], args=[slug, cutoff])
        for name in gone:
            await on_leave(slug, name.decode() if isinstance(name, bytes) else name)


_sweepers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[Any]]" = (
    weakref.WeakKeyDictionary()
)


def presence_sweeper_ensure(on_leave: Callable[[str, str], Awaitable[None]]) -> None:
    """Run one sweeping task per event loop (per web process), started by the first room."""
    loop = asyncio.get_running_loop()
    task = _sweepers.get(loop)
    if task is None or task.done():
        _sweepers[loop] = loop.create_task(_sweep_forever(on_leave))


async def presence_sweeper_stop() -> None:
    """Stop this event loop's sweeping task (a process shutting down, a test ending)."""
    task = _sweepers.pop(asyncio.get_running_loop(), None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=10)


async def _sweep_forever(on_leave: Callable[[str, str], Awaitable[None]]) -> None:
    while True:
        await asyncio.sleep(settings.ROOM_PRESENCE_SWEEP_INTERVAL)
        try:
            await presence_sweep(on_leave=on_leave)
        except Exception:
            logger.exception("presence sweep failed; trying again")
