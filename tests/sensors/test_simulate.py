"""`manage.py simulate_sensors`: demo sensors publishing over the real publish WebSocket.

The command runs as a subprocess, as `manage.py serve` runs it: against a real daphne
(ChannelsLiveServerTestCase) on the test database and Redis, or against a scripted
`websockets` server to watch what it sends while the server is away and when it drops.
"""

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.test import SimpleTestCase

from chatsite.redis_clients import get_redis
from sensors.management.commands.simulate_sensors import PLACES, UNITS, Climate, DayClock
from sensors.models import Sensor, stream_key
from sensors.services import sensor_create, sensor_deactivate
from tests.support.cases import (
    LiveServerTestCase,
    RedisTransactionTestCase,
    reset_redis,
    wait_until,
)
from tests.support.worker import test_database_url


def clear_sensor_keys() -> None:
    """Drop every sensors:* key (streams, last seen, online); reset_redis leaves them."""
    client = get_redis()
    keys = list(client.scan_iter(match="sensors:*", count=1000))
    if keys:
        client.delete(*keys)


def stream_entries(slug: str) -> list[dict[str, Any]]:
    return [
        {"id": i.decode(), "ts": int(f[b"ts"]), "values": json.loads(f[b"v"])}
        for i, f in get_redis().xrange(stream_key(slug))
    ]


class Simulator:
    """One `manage.py simulate_sensors` subprocess on the test database and Redis."""

    def __init__(self, *args: str) -> None:
        env = {
            **os.environ, "DATABASE_URL": test_database_url(), "REDIS_URL": settings.REDIS_URL,
            "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        # Kept open for the process's life; closed and removed in stop().
        self.log = tempfile.NamedTemporaryFile(prefix="simulator-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "simulate_sensors", *args],
            cwd=settings.BASE_DIR, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"simulator still running:\n{self.output()}") from None

    def terminate(self) -> int:
        """SIGTERM, as honcho sends it; the exit code."""
        os.killpg(self.process.pid, signal.SIGTERM)
        return self.wait(timeout=30)

    def stop(self) -> None:
        """For cleanups: end it whatever state it is in."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.log.close()
        Path(self.log.name).unlink(missing_ok=True)


class SimulatorTestCase:
    """Start simulators that are always stopped when the test ends."""

    def simulator(self, *args: str) -> Simulator:
        simulator = Simulator(*args)
        self.addCleanup(simulator.stop)
        return simulator

    def run_simulator(self, *args: str) -> str:
        simulator = self.simulator(*args)
        code = simulator.wait()
        output = simulator.output()
        self.assertEqual(code, 0, output)
        return output


class SimulateAgainstTheServerTests(SimulatorTestCase, LiveServerTestCase):
    """Against a real daphne: sensors created, readings in their streams, clean stops."""

    host = "localhost"

    def setUp(self) -> None:
        super().setUp()
        reset_redis()
        clear_sensor_keys()

    def test_creates_missing_sensors_and_publishes_readings_that_reach_the_streams(self) -> None:
        started_ms = int(time.time() * 1000)
        url = self.live_server_ws_url
        output = self.run_simulator("--count", "2", "--rate", "10", "--duration", "3", "--url", url)
        self.assertIn("Created demo sensor demo-1 (Demo: Greenhouse).", output)
        self.assertIn("Created demo sensor demo-2 (Demo: Living room).", output)
        self.assertIn("Simulator stopped:", output)
        sensors = list(Sensor.objects.order_by("slug"))
        self.assertEqual([s.slug for s in sensors], ["demo-1", "demo-2"])
        for sensor in sensors:
            self.assertEqual(sensor.units, UNITS)
            self.assertIn("simulate_sensors", sensor.description)
            entries = stream_entries(sensor.slug)
            self.assertGreater(get_redis().xlen(stream_key(sensor.slug)), 0)
            self.assertTrue(15 <= len(entries) <= 45, len(entries))  # ~10/s for 3 s
            timestamps = [e["ts"] for e in entries]
            self.assertEqual(timestamps, sorted(timestamps))
            self.assertGreaterEqual(timestamps[0], started_ms)
            for entry in entries:
                values = entry["values"]
                self.assertEqual(set(values), {"temperature", "humidity", "light"})
                self.assertTrue(5 <= values["temperature"] <= 40, values)
                self.assertTrue(0 <= values["humidity"] <= 100, values)
                self.assertGreaterEqual(values["light"], 0)

        # Again: the sensors exist, so none is created; each gets a fresh key and publishes.
        hashes = {s.slug: s.key_hash for s in sensors}
        before = {s.slug: stream_entries(s.slug) for s in sensors}
        output = self.run_simulator("--count", "2", "--rate", "10", "--duration", "2", "--url", url)
        self.assertNotIn("Created", output)
        self.assertEqual(Sensor.objects.count(), 2)
        for sensor in Sensor.objects.all():
            self.assertNotEqual(sensor.key_hash, hashes[sensor.slug])
            entries = stream_entries(sensor.slug)
            old = before[sensor.slug]
            self.assertGreater(len(entries), len(old), output)
            # It carries on from the last values rather than jumping to new random ones.
            last, first = old[-1]["values"], entries[len(old)]["values"]
            self.assertLess(abs(first["temperature"] - last["temperature"]), 0.3)
            self.assertLess(abs(first["humidity"] - last["humidity"]), 1.0)

    def test_sigterm_stops_it_cleanly(self) -> None:
        simulator = self.simulator("--count", "1", "--rate", "5", "--url", self.live_server_ws_url)
        wait_until(lambda: get_redis().xlen(stream_key("demo-1")) > 0, timeout=60)
        self.assertEqual(simulator.terminate(), 0)
        self.assertIn("Simulator stopped:", simulator.output())
        self.assertNotIn("Traceback", simulator.output())

    def test_a_deactivated_demo_sensor_is_left_alone(self) -> None:
        sensor, _ = sensor_create(slug="demo-1", name="Mine now")
        sensor_deactivate(sensor=sensor)
        url = self.live_server_ws_url
        output = self.run_simulator("--count", "2", "--rate", "5", "--duration", "2", "--url", url)
        self.assertIn("Skipping demo-1: the sensor is deactivated.", output)
        self.assertEqual(get_redis().xlen(stream_key("demo-1")), 0)
        self.assertGreater(get_redis().xlen(stream_key("demo-2")), 0)
        self.assertEqual(Sensor.objects.get(slug="demo-1").name, "Mine now")

    def test_with_every_demo_sensor_deactivated_it_waits_instead_of_exiting(self) -> None:
        # Under `manage.py serve` an exiting process would stop all the others.
        sensor, _ = sensor_create(slug="demo-1", name="Retired")
        sensor_deactivate(sensor=sensor)
        simulator = self.simulator("--count", "1", "--url", self.live_server_ws_url)
        wait_until(lambda: "nothing to simulate" in simulator.output(), timeout=60)
        time.sleep(0.5)
        self.assertIsNone(simulator.process.poll())
        self.assertEqual(simulator.terminate(), 0)

    def test_refuses_bad_options(self) -> None:
        for args in (["--count", "0"], ["--rate", "0"], ["--url", "http://x"]):
            with self.subTest(args=args):
                simulator = self.simulator(*args)
                self.assertEqual(simulator.wait(), 1)
                self.assertIn("CommandError", simulator.output())


# --- against a scripted server ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ScriptedServer:
    """A `websockets` server in a thread: drops its first connection after one frame
    without acking it, then acks every frame. Records what each connection received."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connections: list[dict[str, Any]] = []
        self.acked: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def start(self) -> "ScriptedServer":
        self._thread.start()
        assert self._ready.wait(30), "scripted server did not start"
        return self

    def stop(self) -> None:
        if self._thread.is_alive() and self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    def acked_count(self) -> int:
        with self._lock:
            return len(self.acked)

    async def _main(self) -> None:
        from websockets.asyncio.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", self.port):
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, connection: Any) -> None:
        with self._lock:
            record = {
                "path": connection.request.path,
                "authorization": connection.request.headers.get("Authorization", ""),
                "frames": [],
            }
            self.connections.append(record)
            first = len(self.connections) == 1
        async for message in connection:
            frame = json.loads(message)
            batch = frame if isinstance(frame, list) else [frame]
            record["frames"].append(batch)
            if first:
                await connection.close(1011, "dropped by the test")
                return
            with self._lock:
                start = len(self.acked)
                self.acked.extend(batch)
            ids = [f"{start + n + 1}-0" for n in range(len(batch))]
            await connection.send(json.dumps({"type": "ack", "ids": ids}))


class SimulateReconnectTests(SimulatorTestCase, RedisTransactionTestCase):
    """While the server is away readings are kept; they arrive in batches, none lost."""

    def test_waits_for_the_server_then_sends_what_it_kept_and_resends_what_was_not_acked(
        self,
    ) -> None:
        port = free_port()
        simulator = self.simulator(
            "--count", "1", "--rate", "20", "--url", f"ws://127.0.0.1:{port}"
        )
        wait_until(lambda: "cannot connect" in simulator.output(), timeout=60)
        time.sleep(1.5)  # the server is still away: ~30 readings pile up
        server = ScriptedServer(port).start()
        self.addCleanup(server.stop)
        wait_until(lambda: server.acked_count() >= 80, timeout=60)
        self.assertEqual(simulator.terminate(), 0, simulator.output())
        server.stop()

        first, second = server.connections[0], server.connections[1]
        self.assertEqual(first["path"], "/ws/sensors/demo-1/publish")
        self.assertRegex(first["authorization"], r"^Bearer \S{20,}$")  # the key, not in the URL
        kept = first["frames"][0]
        self.assertGreaterEqual(len(kept), 20)  # everything from the time the server was away
        # That frame was never acked: the next connection sends those readings again first.
        self.assertEqual(second["frames"][0][: len(kept)], kept)
        timestamps = [r["ts"] for r in server.acked]
        self.assertEqual(timestamps, sorted(set(timestamps)))  # in order, none twice
        gaps = [b - a for a, b in itertools.pairwise(timestamps)]
        self.assertLess(max(gaps), 500, "readings went missing")  # 20/s: 50 ms apart
        self.assertIn("demo-1: connected.", simulator.output())
        self.assertIn("connection lost (code 1011)", simulator.output())


# --- the values ----------------------------------------------------------------------------------


class ClimateTests(SimpleTestCase):
    """Random walks in realistic ranges; light follows the sun."""

    def test_a_simulated_day_stays_in_realistic_ranges_with_dark_nights(self) -> None:
        start = time.mktime((2026, 6, 1, 0, 0, 0, 0, 0, -1))  # local midnight
        for place in PLACES:
            with self.subTest(place=place.name):
                climate = Climate(place, random.Random(1), DayClock(86400, start=start))
                by_hour: dict[int, list[dict[str, float]]] = {}
                for second in range(0, 86400, 10):
                    values = climate.step(start + second, 10)
                    by_hour.setdefault(second // 3600, []).append(values)
                readings = [v for hour in by_hour.values() for v in hour]
                temperatures = [v["temperature"] for v in readings]
                self.assertLess(max(temperatures), place.temperature + place.swing + 4)
                self.assertGreater(min(temperatures), place.temperature - place.swing - 4)
                self.assertTrue(all(3 <= v["humidity"] <= 99.5 for v in readings))
                self.assertTrue(all(v["light"] >= 0 for v in readings))
                night = max(v["light"] for v in by_hour[3])
                noon = min(v["light"] for v in by_hour[12])
                self.assertLessEqual(night, place.night_lux * 1.1 + 0.01)
                if place.day_lux:
                    self.assertGreater(noon, night + place.day_lux * 0.1)

    def test_a_faster_day_cycles_in_day_seconds(self) -> None:
        clock = DayClock(600, start=time.mktime((2026, 6, 1, 0, 0, 0, 0, 0, -1)))
        self.assertAlmostEqual(clock.phase(clock.start + 300), 0.5, places=3)
        self.assertAlmostEqual(clock.phase(clock.start + 600), 0.0, places=3)
