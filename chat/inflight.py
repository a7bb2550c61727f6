"""This worker process's replies in flight: their stop switches and the locks it holds.

The reply pipeline (chat/replies.py) registers here; the supervisor thread
(chat/supervisor.py) reads it to stop a reply the moment a stop is published and to keep
the conversation locks of live generations from expiring.
"""

import threading
from typing import Any

from chat.providers import Cancel


class InFlight:
    """Thread-safe registry of the replies being generated and the locks held here."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._cancels: dict[str, Cancel] = {}
        self._locks: dict[int, Any] = {}

    def begin(self, key: str) -> Cancel:
        """Register a reply about to be generated; returns its stop switch."""
        cancel = Cancel()
        with self._mutex:
            self._cancels[key] = cancel
        return cancel

    def end(self, key: str) -> None:
        """Forget a reply whose attempt is over."""
        with self._mutex:
            self._cancels.pop(key, None)

    def stop(self, key: str) -> bool:
        """Stop a reply generated here (cuts its upstream stream); False if not here."""
        with self._mutex:
            cancel = self._cancels.get(key)
        if cancel is None:
            return False
        cancel.set()
        return True

    def replies(self) -> int:
        """How many replies are in flight in this process."""
        with self._mutex:
            return len(self._cancels)

    def hold(self, lock: Any) -> None:
        """A conversation lock this process now holds (the supervisor keeps it alive)."""
        with self._mutex:
            self._locks[id(lock)] = lock

    def let_go(self, lock: Any) -> None:
        """A conversation lock about to be released."""
        with self._mutex:
            self._locks.pop(id(lock), None)

    def locks(self) -> list[Any]:
        """The conversation locks held right now."""
        with self._mutex:
            return list(self._locks.values())


IN_FLIGHT = InFlight()
