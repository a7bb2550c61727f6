"""The reply supervisor: one thread (a greenlet under gevent) per worker process.

It listens for stop requests and stops the replies generated in this process at once,
keeps the conversation locks this process holds alive (short leases, so a dead worker's
lock runs out within seconds), and every CHAT_SUPERVISOR_INTERVAL queues again the
replies whose worker is gone. It rides out Redis and database outages by starting over.
"""

import logging
import os
import threading
import time

from django.conf import settings
from django.db import close_old_connections
from redis.exceptions import LockError

from chat.inflight import IN_FLIGHT
from chat.replies import STOP_CHANNEL, ReplyKind, db_release, replies_requeue_orphans
from chat.rooms.assistant import ROOM_REPLIES
from chat.services import CHAT_REPLIES
from chatsite.redis_clients import get_redis

logger = logging.getLogger(__name__)

KINDS: tuple[ReplyKind, ...] = (CHAT_REPLIES, ROOM_REPLIES)
RESTART_DELAY = 1.0  # seconds before starting over after Redis or the database failed

_started: int | None = None  # the pid whose supervisor runs
_start_lock = threading.Lock()


def supervisor_start() -> None:
    """Start this process's supervisor thread (once per process, again after a fork)."""
    global _started
    with _start_lock:
        if _started == os.getpid():
            return
        _started = os.getpid()
        threading.Thread(target=_run, name="reply-supervisor", daemon=True).start()


def _run() -> None:
    while True:
        try:
            _serve()
        except Exception:
            logger.exception("reply supervisor failed; starting over")
            time.sleep(RESTART_DELAY)


def _serve() -> None:
    pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(STOP_CHANNEL)
    lease_every = settings.CHAT_REPLY_LOCK_TTL / 3
    last_lease = last_reap = 0.0
    try:
        while True:
            message = pubsub.get_message(timeout=min(lease_every, 0.5))
            if message is not None:
                IN_FLIGHT.stop(message["data"].decode())
            now = time.monotonic()
            if now - last_lease >= lease_every:
                _extend_leases()
                last_lease = now
            if now - last_reap >= settings.CHAT_SUPERVISOR_INTERVAL:
                _requeue_orphans()
                last_reap = now
    finally:
        pubsub.close()


def _extend_leases() -> None:
    for lock in IN_FLIGHT.locks():
        try:
            lock.extend(settings.CHAT_REPLY_LOCK_TTL, replace_ttl=True)
        except LockError:
            logger.warning("lost a conversation lock (%s)", lock.name)


def _requeue_orphans() -> None:
    close_old_connections()
    try:
        for kind in KINDS:
            replies_requeue_orphans(kind)
    finally:
        db_release()
