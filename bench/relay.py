#!/usr/bin/env python3
"""A plain WebSocket relay over Redis pub/sub: the yardstick for the live path.

It speaks the same socket paths as the site, so `bench/fanout.py` drives both the same way:

* ``/ws/sensors/<slug>/publish``: a publisher sends text frames; each one is PUBLISHed, as
  it came, to the Redis channel ``relay:<slug>`` and answered with ``{"type": "ack"}``.
  No key, no validation, no storage: this is the floor a relay costs, not a sensor API.
* ``/ws/sensors/<slug>``: a watcher receives every frame published for that sensor.

Fan-out is the plain design: one Redis subscription per channel per process (made when the
first local watcher of a sensor arrives, dropped with the last), and each message is
written to the local watchers with ``websockets.broadcast`` (no per-watcher queue, no
per-watcher decoding). Several relay processes behind one port would each hold their
own subscriptions; this script runs one.

    .venv/bin/python bench/relay.py --port 8192 --redis redis://127.0.0.1:6491/0

Only ``websockets`` and ``redis`` (both in requirements.txt) are used; ``--uvloop`` uses
uvloop when it is installed. It runs until SIGINT/SIGTERM, or ``--max-seconds`` (default
3600), whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections import defaultdict

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

PREFIX = "/ws/sensors/"
ACK = json.dumps({"type": "ack"})
logger = logging.getLogger("relay")


class Relay:
    """Watchers by sensor, one pub/sub connection, one publish connection."""

    def __init__(self, redis_url: str) -> None:
        self.redis = aioredis.Redis.from_url(redis_url)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.watchers: dict[str, set[ServerConnection]] = defaultdict(set)
        self.lock = asyncio.Lock()  # subscribe/unsubscribe one at a time
        self.reader: asyncio.Task[None] | None = None
        self.published = 0
        self.fanned = 0

    async def start(self) -> None:
        await self.redis.ping()

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader
        await self.pubsub.aclose()
        await self.redis.aclose()

    async def read_loop(self) -> None:
        """Deliver every message of the subscribed channels to that sensor's watchers."""
        while True:
            if not self.pubsub.subscribed:
                await asyncio.sleep(0.05)
                continue
            message = await self.pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            slug = message["channel"].decode()[len("relay:") :]
            frame = message["data"].decode()
            targets = self.watchers.get(slug)
            if targets:
                broadcast(targets, frame)
                self.fanned += len(targets)

    async def watch(self, slug: str, ws: ServerConnection) -> None:
        async with self.lock:
            first = not self.watchers[slug]
            self.watchers[slug].add(ws)
            if first:
                await self.pubsub.subscribe(f"relay:{slug}")
                if self.reader is None:
                    self.reader = asyncio.create_task(self.read_loop())
        try:
            async for _ in ws:  # watchers only ping; anything they send is ignored
                pass
        except ConnectionClosed:
            pass
        finally:
            async with self.lock:
                self.watchers[slug].discard(ws)
                if not self.watchers[slug]:
                    del self.watchers[slug]
                    await self.pubsub.unsubscribe(f"relay:{slug}")

    async def publish(self, slug: str, ws: ServerConnection) -> None:
        channel = f"relay:{slug}"
        try:
            async for frame in ws:
                await self.redis.publish(channel, frame)
                self.published += 1
                await ws.send(ACK)
        except ConnectionClosed:
            pass

    async def handler(self, ws: ServerConnection) -> None:
        path = ws.request.path.split("?", 1)[0] if ws.request else ""
        if not path.startswith(PREFIX):
            await ws.close(4404, "not found")
            return
        rest = path[len(PREFIX) :]
        if rest.endswith("/publish"):
            await self.publish(rest[: -len("/publish")], ws)
        elif rest and "/" not in rest:
            await self.watch(rest, ws)
        else:
            await ws.close(4404, "not found")


async def main_async(args: argparse.Namespace) -> None:
    relay = Relay(args.redis)
    await relay.start()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(
        relay.handler, args.host, args.port, max_size=2**20, compression=None,
        ping_interval=20, ping_timeout=20, backlog=4096,
    ):  # fmt: skip
        print(f"relay listening on ws://{args.host}:{args.port}{PREFIX}", flush=True)
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(stop, timeout=args.max_seconds)
    print(f"relay stopping: {relay.published} frames published, {relay.fanned} sent", flush=True)
    await relay.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8192)
    parser.add_argument("--redis", default="redis://127.0.0.1:6390/0")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop if installed")
    parser.add_argument("--max-seconds", type=float, default=3600.0)
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("relay.py is a benchmark tool: it listens on the loopback only")
    logging.basicConfig(level=logging.WARNING)
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print("uvloop is not installed; using asyncio's loop", file=sys.stderr)
        else:
            uvloop.run(main_async(args))
            return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
