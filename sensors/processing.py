"""Consumer-group machinery of the stream processors: a stage handles entries, a runner feeds it.

Every sensor's readings stream (`sensors:readings:<slug>`) is read by one Redis consumer
group per stage. Within a group each entry goes to one consumer; an entry is acknowledged
(XACK) only after the stage's work is committed, so a consumer that dies leaves it pending
and another one reclaims it (XAUTOCLAIM) once it has been idle for SENSOR_RECLAIM_IDLE.
Delivery is at least once; stages make it effectively once with idempotent writes.
See docs/processing.md.
"""

import json
import logging
import threading
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import redis
from django.conf import settings
from django.db import close_old_connections, connections

from chatsite.redis_clients import get_redis
from sensors.models import Sensor, stream_key
from sensors.services import sensors_offline_sweep
from sensors.services_processing import dead_letter_create, readings_purge

logger = logging.getLogger(__name__)

STREAM_PREFIX = stream_key("")
DEAD_LETTER_STREAM = "sensors:dead-letter"
DEAD_LETTER_MAXLEN = 10_000
ERRORS_KEY = "sensors:processing-errors:{group}"  # hash: "<stream> <id>" -> last error
READ_BLOCK_MS = 1000  # at most this long between checks of the stop flag
DISCOVER_EVERY = 5.0  # seconds between looks for new sensors
RECLAIM_EVERY = 5.0  # seconds between reclaim passes (sooner if SENSOR_RECLAIM_IDLE is lower)
ERROR_PAUSE = 1.0  # seconds to wait after Redis or the database failed
MAX_ERROR_CHARS = 8000
STALE_CONSUMER_MS = 24 * 60 * 60 * 1000  # consumers gone this long with nothing pending
PRUNE_EVERY = 3600.0


@dataclass(frozen=True)
class Entry:
    """One stream entry handed to a stage: its stream, id and raw fields."""

    stream: str
    id: str
    fields: dict[bytes, bytes]

    @property
    def slug(self) -> str:
        return self.stream.removeprefix(STREAM_PREFIX)

    @property
    def key(self) -> str:
        return f"{self.stream} {self.id}"


class Stage:
    """One processing step: a consumer group of its own, and what to do with entries.

    `handle` must commit its work before it returns (the runner acknowledges right after)
    and must be idempotent: an entry can be delivered again after a crash or a reclaim.
    Raising makes the runner retry the batch entry by entry, so one bad entry cannot hold
    back the others.
    """

    group: ClassVar[str]
    # Where a new group starts reading: "0" = everything the stream still holds, so a new
    # stage (or a sensor found after its first readings) misses nothing; "$" = only new ones.
    start_id: ClassVar[str] = "0"
    batch_size: ClassVar[int] = 100
    # After a part batch, wait this long (seconds) for more, so a steady trickle is handled
    # in batches: one transaction per batch instead of one per reading. It bounds the delay.
    linger: ClassVar[float] = 0.1

    def handle(self, entries: list[Entry]) -> None:
        """Process the entries and commit; raise if any of them failed."""
        raise NotImplementedError


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def error_text(exc: BaseException) -> str:
    """The exception with its traceback, the end kept when too long."""
    text = "".join(traceback.format_exception(exc))
    return text if len(text) <= MAX_ERROR_CHARS else "…" + text[-MAX_ERROR_CHARS:]


class StageRunner:
    """Feed one stage from every sensor stream as one consumer of the stage's group."""

    def __init__(self, stage: Stage, *, consumer: str, stop: threading.Event | None = None) -> None:
        self.stage = stage
        self.group = stage.group
        self.consumer = consumer
        self.stop = stop or threading.Event()
        self.processed = 0  # entries handled and acknowledged by this runner
        self._streams: list[str] | None = None
        self._grouped: set[str] = set()
        self._discover_at = 0.0
        self._reclaim_at = 0.0
        self._prune_at = time.monotonic() + PRUNE_EVERY

    @property
    def client(self) -> redis.Redis:
        return get_redis()

    @property
    def errors_key(self) -> str:
        return ERRORS_KEY.format(group=self.group)

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        """Read, handle and acknowledge until the stop event is set (then finish the batch)."""
        logger.info("stage %s: consumer %s started", self.group, self.consumer)
        try:
            while not self.stop.is_set():
                try:
                    done = self.step()
                    if 0 < done < self.stage.batch_size:
                        self.stop.wait(self.stage.linger)
                except Exception:
                    logger.exception("stage %s: failed; retrying", self.group)
                    self._streams = None  # the groups may be gone (stream deleted): re-create
                    close_old_connections()
                    self.stop.wait(ERROR_PAUSE)
        finally:
            connections.close_all()  # this thread's connections
            logger.info("stage %s: consumer %s stopped", self.group, self.consumer)

    def step(self, *, block_ms: int = READ_BLOCK_MS) -> int:
        """One turn: reclaim if due, then read new entries; returns how many were done."""
        done = 0
        if time.monotonic() >= self._reclaim_at:
            every = min(RECLAIM_EVERY, max(settings.SENSOR_RECLAIM_IDLE, 0.05))
            self._reclaim_at = time.monotonic() + every
            done += self.reclaim()
        if time.monotonic() >= self._prune_at:
            self._prune_at = time.monotonic() + PRUNE_EVERY
            self.consumers_prune()
        return done + self.read(block_ms=block_ms)

    # --- streams and groups --------------------------------------------------------------

    def streams(self) -> list[str]:
        """Every sensor's stream, with this stage's group on it (refreshed every few s)."""
        if self._streams is None or time.monotonic() >= self._discover_at:
            keys = [stream_key(slug) for slug in Sensor.objects.values_list("slug", flat=True)]
            for key in keys:
                if key not in self._grouped:
                    self._group_create(key)
            self._streams = keys
            self._discover_at = time.monotonic() + DISCOVER_EVERY
        return self._streams

    def _group_create(self, stream: str) -> None:
        try:
            self.client.xgroup_create(stream, self.group, id=self.stage.start_id, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._grouped.add(stream)

    def _nogroup(self, exc: redis.ResponseError) -> bool:
        """The stream (and so its group) was deleted: re-create on the next turn."""
        if "NOGROUP" not in str(exc):
            return False
        logger.warning("stage %s: %s; re-creating groups", self.group, exc)
        self._streams = None
        self._grouped.clear()
        return True

    # --- new entries ---------------------------------------------------------------------

    def read(self, *, block_ms: int = READ_BLOCK_MS) -> int:
        """Read new entries (waiting up to block_ms; 0: not at all), handle, acknowledge."""
        streams = self.streams()
        if not streams:
            self.stop.wait(block_ms / 1000)
            return 0
        try:
            reply = self.client.xreadgroup(
                self.group, self.consumer, dict.fromkeys(streams, ">"),
                count=self.stage.batch_size, block=block_ms or None,
            )  # fmt: skip
        except redis.ResponseError as exc:
            if self._nogroup(exc):
                return 0
            raise
        entries = [
            Entry(_text(stream), _text(entry_id), fields)
            for stream, items in reply or []
            for entry_id, fields in items
        ]
        return self._process(entries, deliveries={}, reclaimed=False)

    # --- reclaiming ----------------------------------------------------------------------

    def reclaim(self) -> int:
        """Take over entries pending longer than SENSOR_RECLAIM_IDLE and process them."""
        idle_ms = int(settings.SENSOR_RECLAIM_IDLE * 1000)
        done = 0
        for stream in self.streams():
            try:
                done += self._reclaim_stream(stream, idle_ms)
            except redis.ResponseError as exc:
                if not self._nogroup(exc):
                    raise
        return done

    def _reclaim_stream(self, stream: str, idle_ms: int) -> int:
        done = 0
        cursor: Any = "0-0"
        while not self.stop.is_set():
            # One entry at a time: reclaimed entries are few (a dead consumer's last batch,
            # failed entries), and so an entry that crashes the process is the only one whose
            # delivery count goes up, and the only one to be dead-lettered for it.
            reply = self.client.xautoclaim(
                stream, self.group, self.consumer, min_idle_time=idle_ms, start_id=cursor,
                count=1,
            )  # fmt: skip
            cursor, claimed = reply[0], reply[1]
            live = [(i, f) for i, f in claimed if i is not None]
            if len(live) < len(claimed):
                # Redis < 7 returns entries trimmed from the stream as nil and keeps them
                # pending; they can never be processed, so acknowledge them.
                self._ack_trimmed(stream)
            if len(reply) > 2 and reply[2]:  # Redis 7+: trimmed ids, already dropped
                self.client.hdel(self.errors_key, *[f"{stream} {_text(i)}" for i in reply[2]])
            entries = [Entry(stream, _text(i), f) for i, f in live]
            if entries:
                done += self._process_reclaimed(entries)
            if _text(cursor) == "0-0":
                return done
        return done

    def _process_reclaimed(self, entries: list[Entry]) -> int:
        deliveries = self._deliveries(entries)
        limit = settings.SENSOR_MAX_DELIVERIES
        todo = []
        for entry in entries:
            if deliveries.get(entry.id, 1) > limit:
                # Delivered the allowed number of times and never acknowledged or failed
                # cleanly: most likely it kills the consumer that handles it.
                error = self.client.hget(self.errors_key, entry.key)
                self._dead_letter(
                    entry,
                    deliveries=deliveries[entry.id] - 1,
                    error=_text(error) if error else "never acknowledged (the consumer died?)",
                )
            else:
                todo.append(entry)
        return self._process(todo, deliveries=deliveries, reclaimed=True)

    def _deliveries(self, entries: list[Entry]) -> dict[str, int]:
        """Each entry's delivery count (this claim included), from XPENDING."""
        pipe = self.client.pipeline(transaction=False)
        for entry in entries:
            pipe.xpending_range(entry.stream, self.group, min=entry.id, max=entry.id, count=1)
        counts = {}
        for entry, rows in zip(entries, pipe.execute(), strict=True):
            if rows:
                counts[entry.id] = int(rows[0]["times_delivered"])
        return counts

    def _ack_trimmed(self, stream: str) -> None:
        start = "-"
        while True:
            rows = self.client.xpending_range(
                stream, self.group, min=start, max="+", count=1000, consumername=self.consumer
            )
            if not rows:
                return
            ids = [_text(r["message_id"]) for r in rows]
            pipe = self.client.pipeline(transaction=False)
            for entry_id in ids:
                pipe.xrange(stream, min=entry_id, max=entry_id, count=1)
            gone = [i for i, found in zip(ids, pipe.execute(), strict=True) if not found]
            if gone:
                logger.warning(
                    "stage %s: %d entries of %s were trimmed before processing",
                    self.group,
                    len(gone),
                    stream,
                )
                self.client.xack(stream, self.group, *gone)
                self.client.hdel(self.errors_key, *[f"{stream} {i}" for i in gone])
            if len(rows) < 1000:
                return
            start = f"({ids[-1]}"

    def consumers_prune(self) -> int:
        """Forget consumers idle for a day with nothing pending (each restart adds one)."""
        pruned = 0
        for stream in self.streams():
            try:
                consumers = self.client.xinfo_consumers(stream, self.group)
            except redis.ResponseError:
                continue
            for info in consumers:
                name = _text(info["name"])
                stale = not info["pending"] and info["idle"] > STALE_CONSUMER_MS
                if stale and name != self.consumer:
                    self.client.xgroup_delconsumer(stream, self.group, name)
                    pruned += 1
        return pruned

    # --- handling ------------------------------------------------------------------------

    def _process(self, entries: list[Entry], *, deliveries: dict[str, int], reclaimed: bool) -> int:
        """Handle a batch; if it fails, entry by entry, so the good ones still get done."""
        if not entries:
            return 0
        try:
            self._handle(entries)
        except Exception as exc:
            if len(entries) == 1:
                self._failed(entries[0], exc, deliveries=deliveries.get(entries[0].id, 1))
                return 0
            logger.warning(
                "stage %s: a batch of %d failed; retrying one by one", self.group, len(entries)
            )
            done = []
            for entry in entries:
                try:
                    self._handle([entry])
                except Exception as entry_exc:
                    self._failed(entry, entry_exc, deliveries=deliveries.get(entry.id, 1))
                else:
                    done.append(entry)
            self._ack(done, reclaimed=reclaimed)
            return len(done)
        self._ack(entries, reclaimed=reclaimed)
        return len(entries)

    def _handle(self, entries: list[Entry]) -> None:
        close_old_connections()  # long-lived thread: honour CONN_MAX_AGE and health checks
        self.stage.handle(entries)

    def _ack(self, entries: list[Entry], *, reclaimed: bool) -> None:
        if not entries:
            return
        by_stream: dict[str, list[str]] = {}
        for entry in entries:
            by_stream.setdefault(entry.stream, []).append(entry.id)
        pipe = self.client.pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        if reclaimed:  # only a redelivered entry can have an error on record
            pipe.hdel(self.errors_key, *[e.key for e in entries])
        pipe.execute()
        self.processed += len(entries)

    def _failed(self, entry: Entry, exc: Exception, *, deliveries: int) -> None:
        """Leave it pending for a retry (after the idle timeout), or dead-letter it."""
        error = error_text(exc)
        logger.warning(
            "stage %s: entry %s failed (delivery %d): %s", self.group, entry.key, deliveries, exc
        )
        if deliveries >= settings.SENSOR_MAX_DELIVERIES:
            self._dead_letter(entry, deliveries=deliveries, error=error)
        else:
            self.client.hset(self.errors_key, entry.key, error)

    def _dead_letter(self, entry: Entry, *, deliveries: int, error: str) -> None:
        fields = {_text(k): _text(v) for k, v in entry.fields.items()}
        close_old_connections()
        dead_letter_create(
            stream=entry.stream, group=self.group, entry_id=entry.id, fields=fields,
            error=error, deliveries=deliveries,
        )  # fmt: skip
        # After the row is committed; atomic, so the stream gets it once with the ack.
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(
            DEAD_LETTER_STREAM,
            {"stream": entry.stream, "group": self.group, "id": entry.id,
             "fields": json.dumps(fields), "error": error, "deliveries": deliveries},
            maxlen=DEAD_LETTER_MAXLEN, approximate=True,
        )  # fmt: skip
        pipe.xack(entry.stream, self.group, entry.id)
        pipe.hdel(self.errors_key, entry.key)
        pipe.execute()
        logger.error(
            "stage %s: entry %s dead-lettered after delivery %d",
            self.group,
            entry.key,
            deliveries,
        )


# --- the process ---------------------------------------------------------------------------


class Housekeeping:
    """The periodic jobs of a processor process: the offline sweep and the retention purge."""

    def __init__(self, *, sweep_every: float = 2.0, purge_every: float = 3600.0) -> None:
        self.sweep_every = sweep_every
        self.purge_every = purge_every
        self._purge_at = 0.0

    def tick(self, *, now_ms: int | None = None) -> None:
        """Sweep now; purge if an hour has passed (at start, then hourly)."""
        close_old_connections()
        try:
            sensors_offline_sweep(now_ms=now_ms)
        except Exception:
            logger.exception("offline sweep failed")
        if time.monotonic() >= self._purge_at and settings.SENSOR_RETENTION_DAYS > 0:
            self._purge_at = time.monotonic() + self.purge_every
            try:
                deleted = readings_purge(older_than_days=settings.SENSOR_RETENTION_DAYS)
            except Exception:
                logger.exception("retention purge failed")
            else:
                if deleted:
                    logger.info("retention: deleted %d readings", deleted)


def processors_run(
    *, stages: Iterable[Stage], consumer: str, stop: threading.Event,
    housekeeping: Housekeeping | None = None,
) -> None:  # fmt: skip
    """Run each stage in a thread, and the housekeeping here, until `stop` is set."""
    runners = [StageRunner(stage, consumer=consumer, stop=stop) for stage in stages]
    threads = [
        threading.Thread(target=r.run, name=f"stage-{r.group}", daemon=True) for r in runners
    ]
    for thread in threads:
        thread.start()
    try:
        wait = housekeeping.sweep_every if housekeeping else 1.0
        while not stop.wait(wait):
            if housekeeping is not None:
                housekeeping.tick()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        connections.close_all()
