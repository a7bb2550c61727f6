"""`manage.py simulate_sensors`: demo sensors publishing realistic readings, like devices do.

Each demo sensor (`demo-1` … `demo-N`) gets one WebSocket to the real publish endpoint,
`/ws/sensors/<slug>/publish`, authenticated with its key in the Authorization header.
Readings are produced on a clock into a per-sensor buffer whatever the connection does;
the sender drains the buffer in batches (at most SENSOR_MAX_BATCH a frame) and drops a
batch only once the server acked it, so after the server was down or restarting, the
readings of the gap arrive in a few batch frames with their original timestamps.

Values are mean-reverting random walks around a per-place climate: temperature and
humidity drift slowly with a day/night swing; light follows the sun (local time, or a
faster cycle with --day-seconds), with drifting cloud cover and evening lamps.
"""

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import random
import re
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, close_old_connections, connection

from sensors.models import SLUG_PATTERN, Sensor

UNITS = {"temperature": "°C", "humidity": "%", "light": "lx"}
BACKOFF_BASE = 0.5  # seconds; doubled per failed attempt, with jitter
BACKOFF_MAX = 10.0
REFUSED_RETRY = 30.0  # the key was refused: someone rotated it, or the sensor is inactive
ACK_TIMEOUT = 15.0
BUFFER_SECONDS = 600  # readings kept while the server is unreachable (oldest dropped first)
BUFFER_MAX = 100_000
FINAL_FLUSH_TIMEOUT = 2.0
RESUME_WITHIN = 6 * 3600  # seconds: a restart carries on from readings this recent
CLOSE_UNAUTHORIZED = 4401


class AckTimeout(Exception):
    """The server took a batch but did not answer: the connection is presumed dead."""


@dataclass(frozen=True)
class Place:
    """The climate a demo sensor lives in."""

    name: str
    temperature: float  # °C, daily mean
    swing: float  # °C, half the day/night difference
    humidity: float  # %, mean at the mean temperature
    day_lux: float  # at noon under a clear sky
    night_lux: float  # floor (street light, standby LEDs)
    lamp_lux: float = 0.0  # lamps on in the evening


PLACES = [
    Place("Greenhouse", 23.0, 4.0, 68.0, 30000.0, 0.3),
    Place("Living room", 21.0, 1.2, 45.0, 450.0, 2.0, lamp_lux=180.0),
    Place("Server room", 19.5, 0.4, 35.0, 0.0, 0.0, lamp_lux=0.0),
    Place("Office", 22.0, 1.5, 40.0, 600.0, 1.0, lamp_lux=400.0),
    Place("Cellar", 13.0, 0.3, 78.0, 15.0, 0.0),
    Place("Balcony", 16.0, 6.0, 60.0, 50000.0, 1.5),
    Place("Workshop", 18.0, 2.0, 50.0, 800.0, 0.5, lamp_lux=500.0),
    Place("Attic", 20.0, 5.0, 42.0, 120.0, 0.0),
]


def place_for(number: int) -> Place:
    """The place of demo sensor `number` (1-based); past the list, the list again."""
    return PLACES[(number - 1) % len(PLACES)]


def sensor_name(number: int) -> str:
    place = place_for(number)
    lap = (number - 1) // len(PLACES)
    return f"Demo: {place.name}" + (f" {lap + 1}" if lap else "")


def sensor_description(place: Place) -> str:
    return (
        f"Simulated {place.name.lower()} climate (temperature, humidity, light), published "
        "by manage.py simulate_sensors."
    )


class DayClock:
    """The phase of the day (0 = midnight, 0.5 = noon): local time, or a faster cycle."""

    def __init__(self, day_seconds: float, start: float | None = None) -> None:
        self.day_seconds = day_seconds
        self.start = time.time() if start is None else start
        self.start_phase = self.local_phase(self.start)

    @staticmethod
    def local_phase(now: float) -> float:
        local = time.localtime(now)
        return (local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec + now % 1) / 86400

    def phase(self, now: float) -> float:
        if self.day_seconds == 86400:
            return self.local_phase(now)
        return (self.start_phase + (now - self.start) / self.day_seconds) % 1.0


class Climate:
    """One sensor's values: Ornstein-Uhlenbeck walks pulled towards a day/night target."""

    REVERT_PER_SECOND = 1 / 600  # drift back towards the target over ~10 minutes

    def __init__(self, place: Place, rng: random.Random, clock: DayClock) -> None:
        self.place = place
        self.rng = rng
        self.clock = clock
        self.temperature = place.temperature + rng.uniform(-1.0, 1.0)
        self.humidity = place.humidity + rng.uniform(-3.0, 3.0)
        self.cloud = rng.uniform(0.55, 0.95)  # share of the sun that gets through

    def resume(self, values: dict[str, Any]) -> None:
        """Carry on from a sensor's last published values (a restart is no jump)."""
        for name in ("temperature", "humidity"):
            value = values.get(name)
            if isinstance(value, int | float) and math.isfinite(value):
                setattr(self, name, float(value))

    def _walk(self, value: float, target: float, sigma: float, dt: float, revert: float) -> float:
        pull = revert * (target - value) * dt
        return value + pull + sigma * math.sqrt(dt) * self.rng.gauss(0.0, 1.0)

    def step(self, now: float, dt: float) -> dict[str, float]:
        """Advance by dt seconds to time `now`; the reading's values."""
        place, phase = self.place, self.clock.phase(now)
        dt = max(min(dt, 60.0), 0.0)
        # Warmest mid-afternoon (15:00), coolest before dawn.
        target_t = place.temperature + place.swing * math.cos(2 * math.pi * (phase - 15 / 24))
        self.temperature = self._walk(self.temperature, target_t, 0.02, dt, self.REVERT_PER_SECOND)
        # Warmer air holds more water: relative humidity falls as temperature rises.
        target_h = place.humidity - 1.8 * (self.temperature - place.temperature)
        self.humidity = self._walk(self.humidity, target_h, 0.08, dt, self.REVERT_PER_SECOND)
        self.humidity = min(max(self.humidity, 3.0), 99.5)
        self.cloud = self._walk(self.cloud, 0.75, 0.004, dt, 1 / 300)
        self.cloud = min(max(self.cloud, 0.15), 1.0)
        hour = phase * 24
        sun = max(0.0, math.sin(math.pi * (hour - 6) / 12))  # up 06:00-18:00, noon peak
        lamps = place.lamp_lux if 17.5 <= hour < 23 and sun < 0.3 else 0.0
        light = place.day_lux * sun * self.cloud + lamps + place.night_lux
        light *= 1 + self.rng.gauss(0.0, 0.005)  # sensor noise
        return {
            "temperature": round(self.temperature + self.rng.gauss(0.0, 0.01), 2),
            "humidity": round(self.humidity, 1),
            "light": round(max(light, 0.0), 1),
        }


@dataclass
class DemoSensor:
    """One simulated device: its key, its climate, readings waiting for an ack."""

    slug: str
    key: str
    climate: Climate
    buffer: deque = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    dropped: int = 0
    connected_once: bool = False


def backoff_delay(attempt: int, rng: random.Random) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random."""
    ceiling = min(BACKOFF_MAX, BACKOFF_BASE * 2**attempt)
    return ceiling / 2 + rng.random() * ceiling / 2


def default_url() -> str:
    """ws://<HOST>:<PORT>, as `manage.py serve` passes them; 127.0.0.1 for any-address."""
    host = os.environ.get("HOST", "") or "127.0.0.1"
    if host in ("0.0.0.0", "::", "[::]"):
        host = "127.0.0.1"
    return f"ws://{host}:{os.environ.get('PORT', '8000')}"


class Command(BaseCommand):
    """Create demo sensors if missing and publish readings over the publish WebSocket."""

    help = (
        "Publish realistic readings (slowly drifting temperature and humidity, and light "
        "with a day/night cycle) from demo sensors demo-1..N over the real publish "
        "WebSocket, as devices would. Missing sensors are created. Only a hash of a "
        "sensor's key is stored, so each start gives every demo sensor a NEW key (any "
        "other publisher using the old key is disconnected). Reconnects with backoff and "
        "re-sends buffered readings; stops cleanly on SIGTERM or Ctrl-C."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--count", type=int, default=3, help="demo sensors (default 3)")
        parser.add_argument(
            "--rate", type=float, default=5.0,
            help="readings per second per sensor (default 5)",
        )  # fmt: skip
        parser.add_argument(
            "--url", default=None,
            help="server base URL (default ws://127.0.0.1:${PORT:-8000})",
        )  # fmt: skip
        parser.add_argument("--prefix", default="demo", help="slug prefix (default demo)")
        parser.add_argument(
            "--duration", type=float, default=None,
            help="stop after this many seconds of publishing (default: run until stopped)",
        )  # fmt: skip
        parser.add_argument(
            "--day-seconds", type=float, default=86400.0,
            help="length of the simulated day; 86400 (default) follows the local clock",
        )  # fmt: skip
        parser.add_argument("--seed", type=int, default=None, help="random seed")

    def handle(self, *args: Any, **options: Any) -> None:
        count, rate, prefix = options["count"], options["rate"], options["prefix"]
        if not 1 <= count <= 100:
            raise CommandError("--count must be from 1 to 100.")
        if not 0 < rate <= 100:
            raise CommandError("--rate must be more than 0 and at most 100 per second.")
        if options["day_seconds"] < 60:
            raise CommandError("--day-seconds must be at least 60.")
        if not re.fullmatch(SLUG_PATTERN, f"{prefix}-{count}"):
            raise CommandError("--prefix must be lowercase letters, digits, - and _.")
        url = (options["url"] or default_url()).rstrip("/")
        if not url.startswith(("ws://", "wss://")):
            raise CommandError("--url must start with ws:// or wss://.")
        logging.getLogger("websockets").setLevel(logging.WARNING)
        self.rng = random.Random(options["seed"])
        self.stop = threading.Event()  # set by SIGTERM/SIGINT or the end of --duration
        self._install_signal_handlers()

        keys = self._setup(prefix, count)
        if keys is None:
            return  # stopped before the sensors could be set up
        if not keys:
            # Exiting would make `manage.py serve` (honcho) stop every other process too.
            self.stderr.write("Every demo sensor is deactivated: nothing to simulate. Waiting "
                              "until stopped (Ctrl-C).")  # fmt: skip
            self.stop.wait(options["duration"])
            return
        limit = settings.SENSOR_RATE_LIMIT / settings.SENSOR_RATE_WINDOW
        if rate > limit:
            self.stderr.write(
                f"Warning: {rate:g} readings/s is above SENSOR_RATE_LIMIT ({limit:g}/s): "
                "the server will slow this simulator down."
            )
        clock = DayClock(options["day_seconds"])
        sensors = []
        for slug, key in keys:
            number = int(slug.rsplit("-", 1)[1])
            climate = Climate(place_for(number), self.rng, clock)
            climate.resume(self._last_values(slug))
            sensors.append(DemoSensor(slug=slug, key=key, climate=climate))
        buffer_max = min(BUFFER_MAX, max(1000, int(rate * BUFFER_SECONDS)))
        for sensor in sensors:
            sensor.buffer = deque(maxlen=buffer_max)
        self.stdout.write(
            f"Simulating {len(sensors)} sensors ({', '.join(s.slug for s in sensors)}) at "
            f"{rate:g} readings/s each, publishing to {url}"
        )
        asyncio.run(self._run(sensors, url, rate, options["duration"]))
        total = sum(s.sent for s in sensors)
        dropped = sum(s.dropped for s in sensors)
        extra = f"; {dropped} dropped" if dropped else ""
        self.stdout.write(f"Simulator stopped: {total} readings published{extra}.")

    # --- signals --------------------------------------------------------------------------

    def _install_signal_handlers(self) -> None:
        """Before the event loop runs: the first SIGTERM/SIGINT asks to stop, a second kills."""

        def ask_stop(signum: int, frame: Any) -> None:
            self.stop.set()
            signal.signal(signum, signal.SIG_DFL)

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, ask_stop)

    # --- sensors and keys (sync, before the loop) -------------------------------------------

    def _setup(self, prefix: str, count: int) -> list[tuple[str, str]] | None:
        """Create missing demo sensors and give each a fresh key; retry until the DB is up."""
        attempt = 0
        while not self.stop.is_set():
            try:
                return self._sensor_keys(prefix, count)
            except Exception as exc:  # database not migrated yet, Redis still starting, ...
                delay = backoff_delay(attempt, self.rng)
                attempt += 1
                first_line = (str(exc).splitlines() or [""])[0][:200]
                hint = " Has `manage.py migrate` run?" if isinstance(exc, DatabaseError) else ""
                self.stderr.write(
                    f"Cannot set up the demo sensors yet ({type(exc).__name__}: {first_line}); "
                    f"retrying in {delay:.1f} s.{hint}"
                )
                close_old_connections()
                self.stop.wait(delay)
        return None

    @staticmethod
    def _last_values(slug: str) -> dict[str, Any]:
        """The values of the sensor's newest reading still in its stream, if recent."""
        from chatsite.redis_clients import get_redis
        from sensors.models import stream_key

        try:
            entries = get_redis().xrevrange(stream_key(slug), count=1)
        except Exception:  # a fresh start is fine too
            return {}
        if not entries:
            return {}
        fields = entries[0][1]
        if time.time() * 1000 - int(fields[b"ts"]) > RESUME_WITHIN * 1000:
            return {}
        values = json.loads(fields[b"v"])
        return values if isinstance(values, dict) else {}

    def _sensor_keys(self, prefix: str, count: int) -> list[tuple[str, str]]:
        from chatsite.redis_clients import get_redis
        from sensors.services import sensor_create, sensor_key_rotate

        get_redis().ping()  # key rotation tells connected publishers over Redis
        keys = []
        try:
            for number in range(1, count + 1):
                slug = f"{prefix}-{number}"
                sensor = Sensor.objects.filter(slug=slug).first()
                if sensor is None:
                    place = place_for(number)
                    sensor, key = sensor_create(
                        slug=slug, name=sensor_name(number),
                        description=sensor_description(place), units=dict(UNITS),
                    )  # fmt: skip
                    self.stdout.write(f"Created demo sensor {slug} ({sensor.name}).")
                elif not sensor.active:
                    self.stderr.write(f"Skipping {slug}: the sensor is deactivated.")
                    continue
                else:
                    key = sensor_key_rotate(sensor=sensor)
                keys.append((slug, key))
        finally:
            connection.close()  # nothing more to do in the database
        return keys

    # --- the event loop ---------------------------------------------------------------------

    async def _run(
        self, sensors: list[DemoSensor], url: str, rate: float, duration: float | None
    ) -> None:
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        if self.stop.is_set():
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_from_loop, stopping, sig)
        if duration is not None:
            loop.call_later(duration, stopping.set)
        tasks = []
        for sensor in sensors:
            tasks.append(asyncio.create_task(self._produce(sensor, rate, stopping)))
            tasks.append(asyncio.create_task(self._publish(sensor, url, stopping)))
        try:
            await stopping.wait()
        finally:
            for sensor in sensors:
                sensor.wake.set()
            # Publishers flush what they hold (briefly), then close their sockets.
            _done, pending = await asyncio.wait(tasks, timeout=FINAL_FLUSH_TIMEOUT + 3)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _stop_from_loop(self, stopping: asyncio.Event, sig: int) -> None:
        self.stop.set()
        stopping.set()
        loop = asyncio.get_running_loop()
        loop.remove_signal_handler(sig)  # a second signal ends the process at once
        signal.signal(sig, signal.SIG_DFL)

    async def _produce(self, sensor: DemoSensor, rate: float, stopping: asyncio.Event) -> None:
        """Take a reading every 1/rate seconds, connected or not."""
        interval = 1.0 / rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        last = time.time()
        while not stopping.is_set():
            now = time.time()
            values = sensor.climate.step(now, now - last)
            last = now
            if len(sensor.buffer) == sensor.buffer.maxlen:
                sensor.dropped += 1  # the oldest goes: the server has been away for long
            sensor.buffer.append({"ts": int(now * 1000), "values": values})
            sensor.wake.set()
            next_at += interval
            if next_at < loop.time() - 1.0:  # fell behind (suspended laptop): skip ahead
                next_at = loop.time() + interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), max(0.0, next_at - loop.time()))

    async def _publish(self, sensor: DemoSensor, url: str, stopping: asyncio.Event) -> None:
        """Keep one socket up (reconnecting with backoff) and drain the buffer through it."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidHandshake

        endpoint = f"{url}/ws/sensors/{sensor.slug}/publish"
        headers = {"Authorization": f"Bearer {sensor.key}"}
        attempt = 0
        warned = False
        while not stopping.is_set():
            delay: float | None = None
            try:
                async with connect(
                    endpoint, additional_headers=headers, open_timeout=10, close_timeout=2,
                    max_size=2**20,
                ) as socket:  # fmt: skip
                    if attempt or not sensor.connected_once:
                        state = "reconnected" if sensor.connected_once else "connected"
                        self.stdout.write(f"{sensor.slug}: {state}.")
                    sensor.connected_once = True
                    attempt = 0
                    await self._pump(sensor, socket, stopping)
            except ConnectionClosed as closed:
                code = closed.rcvd.code if closed.rcvd else None
                if code == CLOSE_UNAUTHORIZED:
                    delay = REFUSED_RETRY
                    if not warned:
                        warned = True
                        self.stderr.write(
                            f"{sensor.slug}: the server refused the key (rotated by another "
                            "simulator, or the sensor was deactivated). Retrying every "
                            f"{REFUSED_RETRY:.0f} s; restart the simulator for a fresh key."
                        )
                elif not stopping.is_set():
                    why = f"code {code}" if code else "no close frame"
                    self.stdout.write(f"{sensor.slug}: connection lost ({why}); reconnecting.")
            except AckTimeout:
                self.stdout.write(f"{sensor.slug}: no ack in {ACK_TIMEOUT:.0f} s; reconnecting.")
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                if attempt == 0 or attempt % 10 == 0:
                    reason = str(exc) or type(exc).__name__
                    self.stdout.write(
                        f"{sensor.slug}: cannot connect to {url} yet ({reason[:120]}); "
                        f"{len(sensor.buffer)} readings buffered, retrying."
                    )
            except Exception as exc:  # never let one sensor's surprise end the simulator
                self.stderr.write(f"{sensor.slug}: {type(exc).__name__}: {exc}")
            if stopping.is_set():
                return
            if delay is None:
                delay = backoff_delay(attempt, self.rng)
                attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), delay)

    async def _pump(self, sensor: DemoSensor, socket: Any, stopping: asyncio.Event) -> None:
        """Send buffered readings in batches, each dropped from the buffer once acked."""
        while True:
            if not sensor.buffer:
                if stopping.is_set():
                    return
                sensor.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sensor.wake.wait(), 1.0)
                continue
            timeout = FINAL_FLUSH_TIMEOUT if stopping.is_set() else ACK_TIMEOUT
            batch = list(itertools.islice(sensor.buffer, settings.SENSOR_MAX_BATCH))
            payload = batch[0] if len(batch) == 1 else batch
            await socket.send(json.dumps(payload, separators=(",", ":")))
            try:
                reply = await asyncio.wait_for(self._reply(socket), timeout)
            except TimeoutError:
                if stopping.is_set():
                    return
                raise AckTimeout from None
            if reply.get("type") == "ack":
                acked = min(len(reply.get("ids", [])), len(batch))
                for _ in range(acked):
                    sensor.buffer.popleft()
                sensor.sent += acked
            elif reply.get("code") == "rate_limited":
                if stopping.is_set():
                    return
                wait = float(reply.get("retry_after") or 1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), min(wait, 60.0))
            elif reply.get("code") == "unauthorized":
                continue  # the close (4401) follows; the next send raises ConnectionClosed
            else:  # refused for good (invalid): drop it rather than resend it forever
                for _ in range(len(batch)):
                    sensor.buffer.popleft()
                sensor.dropped += len(batch)
                self.stderr.write(f"{sensor.slug}: batch refused: {reply.get('message')}")
            if stopping.is_set() and not sensor.buffer:
                return

    @staticmethod
    async def _reply(socket: Any) -> dict[str, Any]:
        """The next ack or error frame (pongs and anything else are skipped)."""
        while True:
            frame = json.loads(await socket.recv())
            if isinstance(frame, dict) and frame.get("type") in ("ack", "error"):
                return frame
