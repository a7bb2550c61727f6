"""Send channel-layer group events from sync code (Celery tasks, on_commit hooks).

async_to_sync would start a new event loop, and so a new Redis connection, on every
call; per-delta sends are hot, so each process keeps one loop thread and one layer
connection for its whole life.
"""

import asyncio
import json
import os
import threading
from typing import Any

from channels.layers import get_channel_layer

_state: tuple[int, asyncio.AbstractEventLoop] | None = None
_lock = threading.Lock()
SEND_TIMEOUT = 10.0


def _loop() -> asyncio.AbstractEventLoop:
    global _state
    with _lock:
        if _state is None or _state[0] != os.getpid():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="broadcast", daemon=True)
            thread.start()
            _state = (os.getpid(), loop)
        return _state[1]


def frame_event(payload: dict[str, Any], *, skip_channel: str | None = None) -> dict[str, Any]:
    """Wrap a wire payload as a group event, serialised once for every receiving socket."""
    event: dict[str, Any] = {"type": "socket.frame", "frame": json.dumps(payload)}
    if skip_channel:
        event["skip"] = skip_channel
    return event


def group_send_sync(group: str, event: dict[str, Any]) -> None:
    """Send one event to a group from sync code, over this process's long-lived loop."""
    layer = get_channel_layer()
    future = asyncio.run_coroutine_threadsafe(layer.group_send(group, event), _loop())
    future.result(timeout=SEND_TIMEOUT)


def broadcast_sync(group: str, payload: dict[str, Any], *, skip_channel: str | None = None) -> None:
    """Send a wire payload to every socket in a group (sync code)."""
    group_send_sync(group, frame_event(payload, skip_channel=skip_channel))
